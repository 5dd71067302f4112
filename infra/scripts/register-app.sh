#!/usr/bin/env bash
# Creates or updates the multi-tenant app registration the collector signs customers in
# with, and keeps its client secret in Key Vault (secret mssp-client-secret). Idempotent:
# run it again at any time; it only changes what is missing.
#
#   - app registration, sign-in audience AzureADMultipleOrgs (any Entra ID tenant)
#   - Web redirect URI https://<function app host>/api/consent/callback
#   - delegated permission Alert.Read on WindowsDefenderATP (Defender for Endpoint API)
#   - a client secret, piped from Entra ID straight into Key Vault (never printed or
#     written to disk), only when the vault has none yet or with --rotate
#   - MSSP_CLIENT_ID in the azd environment and in the function app's settings
#
# Defaults come from the azd environment (outputs of infra/main.bicep), so after
# `azd up` it needs no arguments. Needs: az (logged in with the right to create app
# registrations, e.g. Application Developer) and Key Vault Secrets Officer on the vault
# (infra/main.bicep grants it to the deploying user). Runs on bash 3.2+ (macOS).
#
# Usage: infra/scripts/register-app.sh [options]   (see --help)
set -euo pipefail

readonly DEFENDER_APP_ID="fc780465-2017-40d4-a0c5-307022471b92" # WindowsDefenderATP
readonly DEFENDER_SCOPE="Alert.Read"
readonly SECRET_NAME="mssp-client-secret"
readonly CREDENTIAL_PREFIX="mssp-collector"
readonly CALLBACK_PATH="/api/consent/callback"

usage() {
  cat <<'USAGE'
Usage: infra/scripts/register-app.sh [options]

Options (each defaults to the azd environment value in brackets):
  --redirect-uri URI     consent callback URI [CONSENT_REDIRECT_URI]
  --vault-name NAME      Key Vault for the client secret [AZURE_KEY_VAULT_NAME]
  --function-app NAME    function app to update MSSP_CLIENT_ID on [AZURE_FUNCTION_APP_NAME]
  --resource-group NAME  its resource group [AZURE_RESOURCE_GROUP]
  --client-id GUID       use this existing app registration [MSSP_CLIENT_ID]
  --name NAME            display name when creating one ["MSSP Defender collector (<env>)"]
  --secret-years N       lifetime of a new client secret, in years (default 1)
  --rotate               add a new client secret and store it as a new vault version
  --prune-old-secrets    delete this script's older client secrets of the app and disable
                         older vault versions (run after the app runs on the new secret)
  --no-azd               do not read or write the azd environment
  --from-azd-hook        used by the azure.yaml postprovision hook; skipped when
                         MSSP_SKIP_APP_REGISTRATION=true
  -h, --help             show this help
USAGE
}

log() { printf 'register-app: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

redirect_uri=""
vault_name=""
function_app=""
resource_group=""
client_id=""
display_name=""
secret_years="1"
rotate=false
prune=false
use_azd=true
from_hook=false

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
  --redirect-uri) need_value "$@"; redirect_uri="$2"; shift 2 ;;
  --vault-name) need_value "$@"; vault_name="$2"; shift 2 ;;
  --function-app) need_value "$@"; function_app="$2"; shift 2 ;;
  --resource-group) need_value "$@"; resource_group="$2"; shift 2 ;;
  --client-id) need_value "$@"; client_id="$2"; shift 2 ;;
  --name) need_value "$@"; display_name="$2"; shift 2 ;;
  --secret-years) need_value "$@"; secret_years="$2"; shift 2 ;;
  --rotate) rotate=true; shift ;;
  --prune-old-secrets) prune=true; shift ;;
  --no-azd) use_azd=false; shift ;;
  --from-azd-hook) from_hook=true; shift ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; die "unknown option: $1" ;;
  esac
done

if $from_hook && [[ "${MSSP_SKIP_APP_REGISTRATION:-}" == "true" ]]; then
  log "MSSP_SKIP_APP_REGISTRATION=true: skipping the app registration"
  exit 0
fi

[[ "$secret_years" =~ ^[1-9][0-9]?$ ]] || die "--secret-years must be a whole number of years"
command -v az >/dev/null 2>&1 || die "the Azure CLI (az) is not installed"
if $use_azd && ! command -v azd >/dev/null 2>&1; then
  log "azd not found: using only the options and environment variables"
  use_azd=false
fi

# az output without Windows line endings (Git Bash / WSL with a Windows az).
az_tsv() { az "$@" --output tsv | tr -d '\r'; }

# The current azd environment as KEY="value" lines (empty without azd).
azd_values=""
if $use_azd; then
  azd_values="$(azd env get-values 2>/dev/null | tr -d '\r' || true)"
fi

# A value of the azd environment, or empty.
azd_value() {
  local line
  line="$(printf '%s\n' "$azd_values" | grep -m1 "^$1=" || true)"
  line="${line#*=}"
  line="${line#\"}"
  printf '%s' "${line%\"}"
}

# A value from the process environment (azd exports its values into hooks), else from
# the azd environment; empty when neither has it.
env_value() {
  if [[ -n "${!1:-}" ]]; then
    printf '%s' "${!1}"
  else
    azd_value "$1"
  fi
}

[[ -n "$redirect_uri" ]] || redirect_uri="$(env_value CONSENT_REDIRECT_URI)"
[[ -n "$vault_name" ]] || vault_name="$(env_value AZURE_KEY_VAULT_NAME)"
[[ -n "$function_app" ]] || function_app="$(env_value AZURE_FUNCTION_APP_NAME)"
[[ -n "$resource_group" ]] || resource_group="$(env_value AZURE_RESOURCE_GROUP)"
[[ -n "$client_id" ]] || client_id="$(env_value MSSP_CLIENT_ID)"
if [[ -z "$display_name" ]]; then
  env_name="$(env_value AZURE_ENV_NAME)"
  display_name="MSSP Defender collector${env_name:+ ($env_name)}"
fi

[[ -n "$redirect_uri" ]] || die "no redirect URI: run 'azd provision' first or pass --redirect-uri https://<app host>$CALLBACK_PATH"
[[ "$redirect_uri" == https://* ]] || die "the redirect URI must use https: $redirect_uri"
[[ "$redirect_uri" == *"$CALLBACK_PATH" ]] || log "warning: the app's callback is $CALLBACK_PATH; $redirect_uri does not end with it"
[[ -n "$vault_name" ]] || die "no Key Vault: run 'azd provision' first or pass --vault-name"

az account show --output none 2>/dev/null || die "not logged in: run 'az login' (the tenant that should own the app registration)"

# --- App registration -----------------------------------------------------------------

if [[ -n "$client_id" ]]; then
  az ad app show --id "$client_id" --output none 2>/dev/null ||
    die "MSSP_CLIENT_ID=$client_id is no app registration in this tenant (az account show); pass --client-id or clear it with 'azd env set MSSP_CLIENT_ID \"\"'"
else
  matches="$(az_tsv ad app list --display-name "$display_name" --query "[].appId")"
  count="$(printf '%s\n' "$matches" | grep -c . || true)"
  [[ "$count" -le 1 ]] || die "$count app registrations are named '$display_name': pass --client-id"
  client_id="$matches"
fi

if [[ -z "$client_id" ]]; then
  log "creating the app registration '$display_name'"
  client_id="$(az_tsv ad app create --display-name "$display_name" \
    --sign-in-audience AzureADMultipleOrgs --web-redirect-uris "$redirect_uri" --query appId)"
  [[ -n "$client_id" ]] || die "az ad app create returned no appId"
else
  log "using the app registration $client_id"
fi

audience="$(az_tsv ad app show --id "$client_id" --query signInAudience)"
if [[ "$audience" != "AzureADMultipleOrgs" ]]; then
  log "setting the sign-in audience to AzureADMultipleOrgs (was $audience)"
  az ad app update --id "$client_id" --sign-in-audience AzureADMultipleOrgs --output none
fi

redirect_uris=()
while IFS= read -r uri; do
  [[ -n "$uri" ]] && redirect_uris+=("$uri")
done < <(az_tsv ad app show --id "$client_id" --query "web.redirectUris[]")
has_redirect=false
for uri in ${redirect_uris[@]+"${redirect_uris[@]}"}; do
  [[ "$uri" == "$redirect_uri" ]] && has_redirect=true
done
if ! $has_redirect; then
  log "adding the Web redirect URI $redirect_uri"
  az ad app update --id "$client_id" --web-redirect-uris ${redirect_uris[@]+"${redirect_uris[@]}"} "$redirect_uri" --output none
fi

# --- Defender for Endpoint delegated permission ---------------------------------------

scope_query="oauth2PermissionScopes[?value=='$DEFENDER_SCOPE'].id | [0]"
scope_id="$(az_tsv ad sp show --id "$DEFENDER_APP_ID" --query "$scope_query" 2>/dev/null || true)"
if [[ -z "$scope_id" ]]; then
  log "WindowsDefenderATP has no service principal in this tenant yet; creating it"
  az ad sp create --id "$DEFENDER_APP_ID" --output none ||
    die "cannot create the WindowsDefenderATP service principal ($DEFENDER_APP_ID); ask an administrator, or add the $DEFENDER_SCOPE delegated permission in the portal"
  scope_id="$(az_tsv ad sp show --id "$DEFENDER_APP_ID" --query "$scope_query")"
fi
[[ -n "$scope_id" ]] || die "WindowsDefenderATP publishes no delegated permission named $DEFENDER_SCOPE"

granted="$(az_tsv ad app show --id "$client_id" \
  --query "requiredResourceAccess[?resourceAppId=='$DEFENDER_APP_ID'].resourceAccess[] | [?id=='$scope_id'].id | [0]")"
if [[ -z "$granted" ]]; then
  log "requesting the delegated permission WindowsDefenderATP $DEFENDER_SCOPE ($scope_id)"
  az ad app permission add --id "$client_id" --api "$DEFENDER_APP_ID" \
    --api-permissions "$scope_id=Scope" --output none
  log "(no 'az ad app permission grant' needed: each customer's admin consents in their own tenant)"
fi

if ! az ad sp show --id "$client_id" --output none 2>/dev/null; then
  log "creating the app's service principal in this tenant"
  az ad sp create --id "$client_id" --output none || log "warning: could not create the service principal (not needed for customer tenants)"
fi

# --- Client secret in Key Vault -------------------------------------------------------

# present | absent; waits while a fresh role assignment propagates (403 Forbidden).
secret_state() {
  local attempt err
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    if err="$(az keyvault secret show --vault-name "$vault_name" --name "$SECRET_NAME" --query id --output none 2>&1)"; then
      echo present
      return 0
    fi
    case "$err" in
    *NotFound* | *"was not found"*) echo absent; return 0 ;;
    *Forbidden* | *"not authorized"*)
      log "no access to $vault_name yet (role assignments can take minutes); retrying ($attempt/10)"
      sleep 20
      ;;
    *) log "$err"; return 1 ;;
    esac
  done
  log "still no access to the secrets of $vault_name: you need Key Vault Secrets Officer on it"
  return 1
}

# Reads a password on stdin and stores it as a new version of the vault secret. Refuses an
# empty input, so a failed `credential reset` can never overwrite the secret with "".
# The value stays in a local shell variable and reaches az through a pipe (printf is a
# builtin): it is never printed, passed as an argument, or written to a file.
store_secret() {
  local credential_name="$1" password=""
  IFS= read -r password || true
  password="${password%$'\r'}"
  [[ -n "$password" ]] || return 1
  printf '%s' "$password" |
    az keyvault secret set --vault-name "$vault_name" --name "$SECRET_NAME" --file /dev/stdin \
      --content-type "client secret of app $client_id" \
      --tags "clientId=$client_id" "credential=$credential_name" --output none
}

new_credential() {
  local credential_name
  credential_name="$CREDENTIAL_PREFIX $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  log "adding a client secret ($credential_name, $secret_years year(s)) and storing it in $vault_name/$SECRET_NAME"
  if ! az ad app credential reset --id "$client_id" --append --display-name "$credential_name" \
    --years "$secret_years" --query password --output tsv | store_secret "$credential_name"; then
    log "storing the secret failed; removing the new client secret from the app registration"
    local key_id
    key_id="$(az_tsv ad app credential list --id "$client_id" --query "[?displayName=='$credential_name'].keyId | [0]" || true)"
    [[ -z "$key_id" ]] || az ad app credential delete --id "$client_id" --key-id "$key_id" --output none || true
    die "could not store the client secret in $vault_name"
  fi
}

secret_written=false
state="$(secret_state)" || die "cannot read $vault_name/$SECRET_NAME"
if [[ "$state" == "absent" ]]; then
  new_credential
  secret_written=true
elif $rotate; then
  new_credential
  secret_written=true
else
  log "$vault_name/$SECRET_NAME exists; keeping it (use --rotate for a new one)"
fi

if $prune; then
  current="$(az_tsv keyvault secret show --vault-name "$vault_name" --name "$SECRET_NAME" --query "tags.credential")"
  [[ -n "$current" && "$current" != "None" ]] || die "the current vault version has no credential tag; prune by hand (az ad app credential list)"
  log "keeping the client secret '$current'; deleting this script's older ones"
  while IFS=$'\t' read -r key_id name; do
    [[ -n "$key_id" ]] || continue
    log "deleting the client secret '$name'"
    az ad app credential delete --id "$client_id" --key-id "$key_id" --output none
  done < <(az_tsv ad app credential list --id "$client_id" \
    --query "[?starts_with(displayName || '', '$CREDENTIAL_PREFIX ') && displayName != '$current'].[keyId, displayName]")
  latest="$(az_tsv keyvault secret show --vault-name "$vault_name" --name "$SECRET_NAME" --query "id")"
  while IFS= read -r version_id; do
    [[ -n "$version_id" && "$version_id" != "$latest" ]] || continue
    log "disabling the old vault version ${version_id##*/}"
    az keyvault secret set-attributes --id "$version_id" --enabled false --output none
  done < <(az_tsv keyvault secret list-versions --vault-name "$vault_name" --name "$SECRET_NAME" \
    --query "[?attributes.enabled].id")
fi

# --- Settings -------------------------------------------------------------------------

if $use_azd && [[ "$(azd_value MSSP_CLIENT_ID)" != "$client_id" ]]; then
  azd env set MSSP_CLIENT_ID "$client_id"
  log "azd environment: MSSP_CLIENT_ID=$client_id (the next 'azd provision' keeps it in the app settings)"
fi

settings_changed=false
if [[ -n "$function_app" && -n "$resource_group" ]]; then
  deployed="$(az_tsv functionapp config appsettings list --resource-group "$resource_group" --name "$function_app" \
    --query "[?name=='MSSP_CLIENT_ID'].value | [0]" 2>/dev/null || true)"
  if [[ "$deployed" != "$client_id" ]]; then
    log "setting MSSP_CLIENT_ID on $function_app"
    az functionapp config appsettings set --resource-group "$resource_group" --name "$function_app" \
      --settings "MSSP_CLIENT_ID=$client_id" --output none
    settings_changed=true
  fi
  if $secret_written && ! $settings_changed; then
    # A settings change re-reads Key Vault references anyway; otherwise ask for it.
    site_id="$(az_tsv functionapp show --resource-group "$resource_group" --name "$function_app" --query id)"
    az rest --method post --url "$site_id/config/configreferences/appsettings/refresh?api-version=2022-03-01" --output none ||
      log "warning: could not refresh Key Vault references; the app picks up the new secret within 24 hours or on restart with a settings change"
  fi
else
  log "no function app given: set MSSP_CLIENT_ID=$client_id in its app settings yourself"
fi

log "done. Client id: $client_id. Redirect URI: $redirect_uri"
