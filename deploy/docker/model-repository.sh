#!/usr/bin/env bash
# The Triton model repository in the EMOTION_HOME volume: compose's one-shot `model-repository`
# service and the Triton pod's init container run it with no argument; an operator runs `serve`
# and `rollback` to change the served model (docs/deployment.md, "Rolling out a new model version").
#
#   model-repository.sh              what `emotion demo` does before the stack starts (emotion/demo.py):
#                                    1. the offline model bundle: `emotion models fetch` (verified and
#                                       left alone when present);
#                                    2. the default trained model: the shipped one, copied into
#                                       <home>/trained/default when that holds none
#                                       (training.train.ensure_default_model, as the demo does);
#                                    3. `emotion export --no-load` (Triton is not up yet).
#   model-repository.sh serve DIR    make the trained model folder DIR the served one: it becomes
#                                    <home>/trained/default (the previous one kept beside it as
#                                    default.previous) and graph_gat/moe_fusion get their next version
#                                    folder (`emotion export --no-load --only graph_gat moe_fusion`).
#   model-repository.sh rollback     `emotion export --rollback` graph_gat and moe_fusion (their newest
#                                    version folder goes, the previous one is served) and
#                                    <home>/trained/default becomes the weights that version pinned.
#
# None of them tells Triton: the operator loads the changed models once the services that call them
# are stopped.  The invariant that makes a restart harmless: <home>/trained/default always holds the
# model the repository serves, so step 3 of the next start finds nothing to change (it never exports
# an old default over a newer rollout, nor a rolled-back one over the rollback).
set -euo pipefail

TRAINED_MODELS=(graph_gat moe_fusion)

setting() {  # setting EXPR: a value of the settings these variables give (shared.settings)
  python3 -c "from shared.settings import load_settings; s = load_settings(); print($1)"
}

install_default() {  # install_default DIR: DIR's model files become <home>/trained/default
  local source=$1 trained default staging
  trained=$(setting 's.trained_dir')
  default=$(setting 's.default_model_dir')
  [[ -f $source/model.pt && -f $source/model.yaml ]] || { echo "model-repository: $source holds no model.pt and model.yaml" >&2; exit 2; }
  mkdir -p "$trained"
  staging=$(mktemp -d "$trained/.default.XXXXXX") && chmod 0750 "$staging"
  cp -a "$source/." "$staging/"
  if [[ -d $default ]]; then
    rm -rf "$default.previous"
    mv "$default" "$default.previous"
  fi
  mv "$staging" "$default"   # a rename: the folder is there whole or not at all
  echo "model-repository: $default is now $source"
}

case ${1:-} in
  "")
    echo "model-repository: bundle"
    emotion models fetch --no-progress
    echo "model-repository: default trained model"
    python3 -c 'from shared.settings import load_settings
from training.train import ensure_default_model
print(ensure_default_model(load_settings()))'
    echo "model-repository: export"
    exec emotion export --no-load
    ;;
  serve)
    [[ $# -eq 2 ]] || { echo "usage: $0 serve DIR" >&2; exit 2; }
    install_default "$2"
    exec emotion export --no-load --only "${TRAINED_MODELS[@]}"
    ;;
  rollback)
    for model in "${TRAINED_MODELS[@]}"; do
      emotion export --no-load --rollback "$model"
    done
    # the weights the now-newest version folder pinned (emotion export copies them into <version>/trained/)
    served=$(python3 - <<'PY'
from shared.settings import load_settings
from training.serving.repository import versions

root = load_settings().model_repository / "moe_fusion"
print(root / str(versions(root)[-1]) / "trained")
PY
)
    install_default "$served"
    ;;
  *)
    echo "usage: $0 [serve DIR | rollback]" >&2
    exit 2
    ;;
esac
