# Sourced by the Kafka and Redis entrypoints: fill a deploy/local/templates/*.tmpl file the way
# deploy.local.process.render_template does (Python's string.Template.substitute over ${name}
# placeholders), so a container's server config is rendered from the very template the local
# stack renders, with only the values that must differ in a container.
#
#   render_template TEMPLATE name=value ... > OUT     # a placeholder left unfilled is an error

render_template() {
  local template=$1 text rest out pair match name
  local -A values=()
  shift
  for pair in "$@"; do
    values[${pair%%=*}]=${pair#*=}
  done
  text=$(<"$template")
  # One pass, left to right, as string.Template does: a value is never searched for placeholders.
  rest=$text out=""
  while [[ $rest =~ \$\{([A-Za-z_][A-Za-z0-9_]*)\} ]]; do
    match=${BASH_REMATCH[0]} name=${BASH_REMATCH[1]}
    if [[ ! -v values[$name] ]]; then
      echo "render_template: ${template}: ${match} has no value" >&2
      return 1
    fi
    out+=${rest%%"$match"*}${values[$name]}
    rest=${rest#*"$match"}
  done
  printf '%s%s\n' "$out" "$rest"
}

# A value in double quotes with backslashes and quotes escaped: deploy.local.kafka._jaas (JAAS
# option values) and deploy.local.redis._quote (redis.conf strings) quote exactly so.
quote() {
  local value=${1//\\/\\\\}
  value=${value//\"/\\\"}
  printf '"%s"' "$value"
}

# A secret file's value as shared.settings.Settings.secret reads it (the text, stripped).
read_secret() {
  local value
  value=$(<"$1")
  value=${value#"${value%%[![:space:]]*}"}
  value=${value%"${value##*[![:space:]]}"}
  printf '%s' "$value"
}
