//! Least-privilege NATS users for the mesh's roles, written as a nats-server configuration:
//!
//! - `admin` creates and changes streams, consumers and buckets (`mesh-publisher init`, and the
//!   operator's `status`, `dlq`, `workers`, `miners` commands);
//! - `miner-<id>` publishes only its own tasks, reads only its own results and only its own
//!   keys of the sectors bucket, through consumers `init --miners` made (it creates none but the
//!   short-lived listing of its own keys), and sees no stream's subjects but the buckets it may
//!   read whole;
//! - `worker` pulls tasks and acks them, publishes results and dead letters, keeps its registry
//!   record, reads sector states, weights and drain marks; it cannot publish tasks or touch any
//!   stream or consumer configuration;
//! - `autoscaler` reads stream and consumer info and the worker registry, and writes drain marks.
//!
//! Everything not listed is denied. Replies reach each user on its own inbox prefix
//! (`_INBOX.<user>`), so one user cannot listen to another's replies.

use std::fmt::Write as _;

use crate::model::{MinerId, SectorSize, TaskClass};
use crate::names;
use crate::phases::Phase;

/// One role of the mesh, as one NATS user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Miner(MinerId),
    Worker,
    Autoscaler,
}

/// Subjects a user may publish to and subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Role {
    /// The NATS user name: `admin`, `miner-f01000`, `worker`, `autoscaler`.
    pub fn user(&self) -> String {
        match self {
            Role::Admin => "admin".into(),
            Role::Miner(miner) => format!("miner-{miner}"),
            Role::Worker => "worker".into(),
            Role::Autoscaler => "autoscaler".into(),
        }
    }

    /// The environment variable the server reads the user's password from.
    pub fn password_env(&self) -> String {
        format!(
            "MESH_{}_PASSWORD",
            self.user().replace('-', "_").to_ascii_uppercase()
        )
    }

    pub fn permissions(&self) -> Permissions {
        self.permissions_as(&self.user())
    }

    /// The role's permissions for a user named `user`, whose replies come on `_INBOX.<user>`:
    /// in operator mode each worker is a user of its own (`worker-<name>`).
    pub fn permissions_as(&self, user: &str) -> Permissions {
        let inbox = format!("_INBOX.{user}.>");
        let mut p = Permissions::default();
        match self {
            Role::Admin => {
                p.publish.push(">".into());
                p.subscribe.push(">".into());
                return p;
            }
            Role::Miner(miner) => {
                common(&mut p);
                for class in TaskClass::ALL {
                    // Only the classes a consumer serves: a task of any other would wait in
                    // its work queue forever, unseen by `status`.
                    p.publish.push(format!("mesh.task.*.*.{miner}.{class}"));
                }
                // Tasks for the worker that holds a sector's data, whichever worker that is.
                p.publish.push(format!("mesh.held.*.*.*.{miner}"));
                // The bells that wake idle workers when it publishes a task.
                p.publish.push(names::BELLS.into());
                // Its consumers exist (`init --miners` made them); it reads them and its
                // results, and creates none: a consumer's settings (a push consumer delivering
                // anywhere) cannot be held to anything by permissions.
                for class in TaskClass::ALL {
                    let consumer = names::task_consumer(*miner, class);
                    p.publish
                        .push(format!("$JS.API.CONSUMER.INFO.*.{consumer}"));
                }
                let results = names::result_consumer(*miner);
                let stream = names::RESULT_STREAM;
                p.publish.extend([
                    format!("$JS.API.CONSUMER.INFO.{stream}.{results}"),
                    format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{results}"),
                    format!("$JS.ACK.{stream}.{results}.>"),
                ]);
                // Its own sector keys: read, write, list (a named consumer filtered on them).
                let sectors = names::SECTORS_BUCKET;
                let keys = format!("$KV.{sectors}.{miner}.>");
                p.publish.extend([
                    keys.clone(),
                    format!("$JS.API.DIRECT.GET.KV_{sectors}.{keys}"),
                    format!("$JS.API.CONSUMER.CREATE.KV_{sectors}.*.{keys}"),
                    format!("$JS.FC.KV_{sectors}.>"),
                ]);
                p.publish
                    .push(format!("$KV.{}.{miner}", names::MINERS_BUCKET));
                kv_read(&mut p, names::MINERS_BUCKET);
                // Whether the worker holding a sector's data is still alive.
                kv_read(&mut p, names::WORKERS_BUCKET);
                // Stream info only of the buckets it reads whole: the info of any other stream
                // lists the subjects in it, other miners' sectors and tasks among them.
                for bucket in [names::MINERS_BUCKET, names::WORKERS_BUCKET] {
                    p.publish.push(format!("$JS.API.STREAM.INFO.KV_{bucket}"));
                }
            }
            Role::Worker => {
                common(&mut p);
                // It reads every stream's messages anyway.
                p.publish.push("$JS.API.STREAM.INFO.*".into());
                for stream in task_streams() {
                    consumer_info(&mut p, &stream);
                    p.publish.extend([
                        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
                        format!("$JS.ACK.{stream}.>"),
                    ]);
                }
                // Each worker's own consumer of the tasks of the sectors it holds.
                let held = names::HELD_STREAM;
                consumer_info(&mut p, held);
                p.publish.extend([
                    format!("$JS.API.CONSUMER.CREATE.{held}.*.mesh.held.*.>"),
                    format!("$JS.API.CONSUMER.MSG.NEXT.{held}.*"),
                    format!("$JS.ACK.{held}.>"),
                ]);
                p.publish.push(names::RESULT_SUBJECTS.into());
                p.publish.push(names::DLQ_SUBJECTS.into());
                p.publish.push(format!("$KV.{}.>", names::WORKERS_BUCKET));
                // Tasks it leaves for a newer worker, counted so that they cost no attempt.
                p.publish.push(format!("$KV.{}.>", names::DEFERRED_BUCKET));
                for bucket in [
                    names::WORKERS_BUCKET,
                    names::MINERS_BUCKET,
                    names::DRAIN_BUCKET,
                    names::SECTORS_BUCKET,
                    names::DEFERRED_BUCKET,
                ] {
                    kv_read(&mut p, bucket);
                }
                // The bells a published task rings. Not the task subjects: a user that may
                // subscribe to one can have the server store anything in its task stream, by
                // listening there with a push consumer of its own delivering there.
                p.subscribe.push(names::BELLS.into());
            }
            Role::Autoscaler => {
                common(&mut p);
                for stream in task_streams() {
                    p.publish.push(format!("$JS.API.STREAM.INFO.{stream}"));
                    consumer_info(&mut p, &stream);
                }
                p.publish.push(format!("$KV.{}.>", names::DRAIN_BUCKET));
                p.publish.push(format!("$KV.{}.>", names::LEASES_BUCKET));
                for bucket in [
                    names::WORKERS_BUCKET,
                    names::DRAIN_BUCKET,
                    names::LEASES_BUCKET,
                ] {
                    p.publish.push(format!("$JS.API.STREAM.INFO.KV_{bucket}"));
                    kv_read(&mut p, bucket);
                }
            }
        }
        p.subscribe.insert(0, inbox);
        p
    }
}

/// What every role needs: the account check and the names of the streams (whether the
/// topology exists). Stream info is given per role: with a subjects filter it lists every
/// subject in the stream.
fn common(p: &mut Permissions) {
    p.publish.push("$JS.API.INFO".into());
    p.publish.push("$JS.API.STREAM.NAMES".into());
}

/// Reading which consumers a stream has and how far each is.
fn consumer_info(p: &mut Permissions, stream: &str) {
    p.publish.extend([
        format!("$JS.API.CONSUMER.NAMES.{stream}"),
        format!("$JS.API.CONSUMER.LIST.{stream}"),
        format!("$JS.API.CONSUMER.INFO.{stream}.*"),
    ]);
}

/// Reading a whole bucket: gets, and the ordered consumers `keys()` and watches create.
fn kv_read(p: &mut Permissions, bucket: &str) {
    p.publish.extend([
        format!("$JS.API.DIRECT.GET.KV_{bucket}.>"),
        format!("$JS.API.CONSUMER.CREATE.KV_{bucket}"),
        format!("$JS.API.CONSUMER.CREATE.KV_{bucket}.>"),
        format!("$JS.FC.KV_{bucket}.>"),
    ]);
}

fn task_streams() -> Vec<String> {
    let mut out = Vec::new();
    for phase in Phase::ALL {
        for size in SectorSize::ALL {
            out.push(names::task_stream(phase, size));
        }
    }
    out
}

/// The roles for `miners`: admin, worker, autoscaler and one miner user each.
pub fn roles(miners: &[MinerId]) -> Vec<Role> {
    let mut out = vec![Role::Admin, Role::Worker, Role::Autoscaler];
    out.extend(miners.iter().map(|m| Role::Miner(*m)));
    out
}

/// The user of the system account that [`server_config`] adds on request.
pub const SYSTEM_USER: &str = "sys";

/// A nats-server configuration fragment (`include` it from the server's file) with the account
/// `MESH`, JetStream enabled, and one user per role. Passwords are read from the environment of
/// the server (`MESH_<USER>_PASSWORD`), so the file holds no secret. With `system_account`, the
/// fragment also declares the account `SYS` as the server's system account with one user,
/// [`SYSTEM_USER`] (`MESH_SYS_PASSWORD`), for `nats server report` and cluster monitoring. It
/// must be in this fragment: a second `accounts` block in the server's file would replace this
/// one, not add to it.
pub fn server_config(miners: &[MinerId], system_account: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# The mesh's roles as NATS users, least privilege (README: Security).\n\
         # Generated by `mesh-publisher init --roles FILE --miners {}`; run it again when\n\
         # miners join. Include it from the server's configuration: `include auth.conf`.\n\
         # Each password comes from the server's environment, e.g. MESH_WORKER_PASSWORD;\n\
         # replace `password: $VAR` with a bcrypt hash (`nats server passwd`) or\n\
         # `nkey: U…` as you prefer. There is no anonymous user: clients must log in.",
        miners
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    out.push_str("accounts {\n  MESH {\n    jetstream: enabled\n    users: [\n");
    for role in roles(miners) {
        let p = role.permissions();
        let _ = writeln!(out, "      {{");
        let _ = writeln!(out, "        user: \"{}\"", role.user());
        let _ = writeln!(out, "        password: ${}", role.password_env());
        let _ = writeln!(out, "        permissions: {{");
        for (kind, subjects) in [("publish", &p.publish), ("subscribe", &p.subscribe)] {
            let _ = writeln!(out, "          {kind}: {{ allow: [");
            for subject in subjects {
                let _ = writeln!(out, "            \"{subject}\"");
            }
            let _ = writeln!(out, "          ] }}");
        }
        let _ = writeln!(out, "        }}");
        let _ = writeln!(out, "      }}");
    }
    out.push_str("    ]\n  }\n");
    if system_account {
        let _ = writeln!(
            out,
            "  # The system account: server events, `nats server report`, cluster monitoring.\n  \
             # Only operators log in to it; it sees no mesh subject.\n  \
             SYS {{\n    users: [\n      {{ user: \"{SYSTEM_USER}\", password: $MESH_SYS_PASSWORD }}\n    \
             ]\n  }}"
        );
    }
    out.push_str("}\n");
    if system_account {
        out.push_str("system_account: SYS\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miner(s: &str) -> MinerId {
        s.parse().unwrap()
    }

    #[test]
    fn users_and_password_variables() {
        assert_eq!(Role::Miner(miner("f01000")).user(), "miner-f01000");
        assert_eq!(
            Role::Miner(miner("f01000")).password_env(),
            "MESH_MINER_F01000_PASSWORD"
        );
        assert_eq!(Role::Worker.password_env(), "MESH_WORKER_PASSWORD");
    }

    #[test]
    fn a_miner_is_confined_to_its_own_subjects() {
        let p = Role::Miner(miner("f01000")).permissions();
        assert!(p.publish.iter().all(|s| !s.contains("f01001")));
        assert!(p.publish.contains(&"mesh.task.*.*.f01000.cc".to_string()));
        assert!(
            p.publish
                .contains(&"mesh.task.*.*.f01000.deals".to_string())
        );
        assert!(
            !p.publish
                .iter()
                .any(|s| s.starts_with("mesh.task.") && s.ends_with(".*"))
        );
        assert!(!p.publish.iter().any(|s| s.starts_with("mesh.result")));
        assert!(!p.publish.iter().any(|s| s.contains("STREAM.MSG.GET")));
        assert_eq!(p.subscribe, vec!["_INBOX.miner-f01000.>".to_string()]);
    }

    #[test]
    fn workers_cannot_publish_tasks_or_change_configuration() {
        let p = Role::Worker.permissions();
        for forbidden in [
            "mesh.task",
            "STREAM.CREATE",
            "STREAM.DELETE",
            "STREAM.UPDATE",
            "CONSUMER.DELETE",
            "MESH_RESULT",
        ] {
            assert!(
                !p.publish.iter().any(|s| s.contains(forbidden)),
                "{forbidden}"
            );
        }
        assert!(!p.publish.contains(&">".to_string()));
    }

    #[test]
    fn the_config_lists_every_role() {
        let text = server_config(&[miner("f01000"), miner("f01001")], false);
        for user in [
            "admin",
            "worker",
            "autoscaler",
            "miner-f01000",
            "miner-f01001",
        ] {
            assert!(text.contains(&format!("user: \"{user}\"")), "{user}");
        }
        assert!(text.contains("password: $MESH_MINER_F01001_PASSWORD"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        assert!(!text.contains("SYS"));
    }

    #[test]
    fn the_system_account_is_in_the_same_accounts_block() {
        let text = server_config(&[miner("f01000")], true);
        assert_eq!(text.matches("accounts {").count(), 1);
        let accounts_end = text.rfind("\n}\n").expect("end of the accounts block");
        let sys = text.find("  SYS {").expect("a SYS account");
        assert!(sys < accounts_end, "{text}");
        assert!(text.contains("user: \"sys\", password: $MESH_SYS_PASSWORD"));
        assert!(text.ends_with("}\nsystem_account: SYS\n"), "{text}");
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }
}
