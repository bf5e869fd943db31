//! The files phases read and write, as typed values: their names in an attempt directory, in a
//! sector's record and in the store (under the sector's prefix). No other module spells them.

use std::fmt;
use std::path::{Path, PathBuf};

/// One kind of file a phase reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Artefact {
    /// The pieces the publisher uploaded for a deal sector: `piece-0`, `piece-1`, …
    Pieces,
    /// The unsealed sector AddPiece lays out: `unsealed`.
    Unsealed,
    /// The sealed replica PreCommit2 encodes: `sealed`.
    Sealed,
    /// The cache directory: PreCommit1's layers and tree D, PreCommit2's trees and aux files,
    /// what Finalize keeps of them: `cache/<file>`.
    Cache,
    /// Commit1's vanilla proofs, Commit2's input: `c1.out`.
    C1Output,
}

const PIECE_PREFIX: &str = "piece-";
const CACHE_DIR: &str = "cache";

impl Artefact {
    /// The artefact an object name belongs to, if any.
    pub fn of(name: &str) -> Option<Artefact> {
        [Artefact::Unsealed, Artefact::Sealed, Artefact::C1Output]
            .into_iter()
            .find(|a| a.name() == name)
            .or_else(|| {
                let in_cache = name
                    .strip_prefix(CACHE_DIR)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|file| !file.is_empty());
                in_cache.then_some(Artefact::Cache)
            })
            .or_else(|| name.starts_with(PIECE_PREFIX).then_some(Artefact::Pieces))
    }

    /// Its name in an attempt directory and a record: a file, the cache directory, or the
    /// prefix of the pieces' names.
    pub fn name(self) -> &'static str {
        match self {
            Artefact::Pieces => PIECE_PREFIX,
            Artefact::Unsealed => "unsealed",
            Artefact::Sealed => "sealed",
            Artefact::Cache => CACHE_DIR,
            Artefact::C1Output => "c1.out",
        }
    }

    /// Whether it stays in the sector's directory on the holder (when a worker holds the
    /// sector) rather than going through the store between phases.
    pub fn stays_on_holder(self) -> bool {
        matches!(
            self,
            Artefact::Unsealed | Artefact::Sealed | Artefact::Cache
        )
    }

    /// Whether it is a directory of files (each one object) rather than one file.
    pub fn is_dir(self) -> bool {
        self == Artefact::Cache
    }

    /// Where it lives in attempt directory `dir` (for the pieces, see [`Artefact::piece`]).
    pub fn path(self, dir: &Path) -> PathBuf {
        dir.join(self.name())
    }

    /// The object name of the `i`th piece of a sector.
    pub fn piece(i: usize) -> String {
        format!("{PIECE_PREFIX}{i}")
    }

    /// The object name of `file` inside this directory artefact (the cache).
    pub fn file(self, file: &str) -> String {
        format!("{}/{file}", self.name())
    }

    /// The cache file an object name names, if it names one directly inside the cache.
    pub fn in_cache(name: &str) -> Option<&str> {
        name.strip_prefix(CACHE_DIR)?
            .strip_prefix('/')
            .filter(|file| !file.is_empty())
    }
}

impl fmt::Display for Artefact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Artefact::Pieces => f.write_str("pieces"),
            Artefact::Cache => f.write_str("cache files"),
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_map_to_their_artefact() {
        for (name, artefact) in [
            ("unsealed", Some(Artefact::Unsealed)),
            ("sealed", Some(Artefact::Sealed)),
            ("c1.out", Some(Artefact::C1Output)),
            ("cache/p_aux", Some(Artefact::Cache)),
            ("cache/sc-02-data-layer-1.dat", Some(Artefact::Cache)),
            ("piece-0", Some(Artefact::Pieces)),
            ("cache/", None),
            ("cache", None),
            ("sealed2", None),
            ("other", None),
        ] {
            assert_eq!(Artefact::of(name), artefact, "{name}");
        }
        assert_eq!(Artefact::of(&Artefact::piece(3)), Some(Artefact::Pieces));
        assert_eq!(
            Artefact::in_cache(&Artefact::Cache.file("t_aux")),
            Some("t_aux")
        );
        assert_eq!(Artefact::in_cache("sealed"), None);
        let dir = Path::new("/s/t");
        assert_eq!(Artefact::Cache.path(dir), dir.join("cache"));
        assert_eq!(Artefact::C1Output.path(dir), dir.join("c1.out"));
    }
}
