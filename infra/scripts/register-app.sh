#!/usr/bin/env bash
# Creates or updates the multi-tenant app registration the collector signs customers in
# with, and the credential the app authenticates with. Idempotent: run it again at any
# time; it only changes what is missing, and ends with a summary of what it did.
#
#   - app registration, sign-in audience AzureADMultipleOrgs (any Entra ID tenant), found
#     by its exact display name AND the tag azd-env:<environment> it gets at creation; a
#     registration without that tag is never adopted unless --client-id names it
#   - Web redirect URI https://<function app host>/api/consent/callback
#   - on WindowsDefenderATP (Defender for Endpoint API, source defender) the delegated
#     permission Alert.Read (delegated mode) and the application permission Alert.Read.All
#     (application mode); on Microsoft Graph (source graph, security alerts_v2) the
#     delegated and the application permission SecurityAlert.Read.All; every permission ID
#     is read from the API's service principal, never hard-coded
#   - the app's credential, by --credential (MSSP_CLIENT_CREDENTIAL, default managed-identity):
#     - managed-identity: a federated identity credential on the app registration (issuer
#       {login host}/{tenant}/v2.0, subject = the user-assigned identity's principal ID,
#       audience api://AzureADTokenExchange, ...USGov or ...China by the cloud). No secret
#       is created or stored anywhere, and the vault is not touched;
#     - certificate: a Key Vault certificate whose key is not exportable, its public part
#       uploaded to the app registration, and Key Vault Crypto User for the app's identity
#       on that key only (the private key never leaves the vault); MSSP_CLIENT_CERTIFICATE_KEY_ID
#       and MSSP_CLIENT_CERTIFICATE_THUMBPRINT (x5t#S256) in the azd environment and the app;
#     - secret: a client secret, piped from Entra ID straight into Key Vault (never printed
#       or written to disk) with its expiry as the secret's `expires` attribute, only when
#       the vault has none yet or with --rotate; a vault secret of another client ID is never
#       overwritten
#   - MSSP_CLIENT_ID in the azd environment and in the function app's settings
#
# and the two single-tenant registrations operators use (section "Operator registrations"):
#
#   - the operator API ("... operator API (<env>)"): App ID URI api://<appId>, access
#     tokens v2, the delegated scope Operator.Access, the app roles Reader, Operator and
#     Admin (member types User and Application), a service principal that requires a role
#     assignment; the signed-in user gets Admin unless --no-operator-admin
#   - the console ("... console (<env>)"): a single-page app with the redirect URI
#     https://<function app host>/api/console/, the permission Operator.Access,
#     pre-authorized by the operator API (no consent prompt)
#   - OPERATOR_TENANT_ID, OPERATOR_API_CLIENT_ID and OPERATOR_CONSOLE_CLIENT_ID in the azd
#     environment (Bicep receives them as parameters) and in the function app's settings
#
# Both are found like the first one (exact name and azd-env tag); roles and scopes keep
# their IDs across runs, and roles or scopes the script does not manage are kept.
#
# Access to the vault (certificate, secret) is temporary. The deployer has no standing data role (main.bicep
# grantDeployerDataAccess is off), so when the script cannot read the vault's secrets it
# grants the signed-in principal Key Vault Secrets Officer, scoped to the client secret
# when that exists (to the vault only for the very first secret), and deletes the
# assignment when it exits. With vnetEnabled the vault refuses public traffic; the script
# then opens it to this machine's public IP address alone and closes it again on exit.
# Both need the right to change the vault and its role assignments (Owner, or Contributor
# plus Role Based Access Control Administrator), which deploying the template needs anyway.
#
# Defaults come from the azd environment (outputs of infra/main.bicep), so after
# `azd up` it needs no arguments. Needs: az, logged in with the right to create app
# registrations (e.g. Application Developer). Runs on bash 3.2+ (macOS).
#
# Usage: infra/scripts/register-app.sh [options]   (see --help)
set -euo pipefail

readonly DEFENDER_APP_ID="fc780465-2017-40d4-a0c5-307022471b92" # WindowsDefenderATP
readonly DEFENDER_SCOPE="Alert.Read"
readonly DEFENDER_ROLE="Alert.Read.All"
readonly GRAPH_APP_ID="00000003-0000-0000-c000-000000000000" # Microsoft Graph
readonly GRAPH_SCOPE="SecurityAlert.Read.All"
readonly GRAPH_ROLE="SecurityAlert.Read.All"
readonly CREDENTIAL_PREFIX="mssp-collector"
readonly FIC_NAME="mssp-collector-managed-identity"
readonly CALLBACK_PATH="/api/consent/callback"
readonly SECRETS_OFFICER_ROLE="b86a8fe4-44ce-4948-aee5-eccb2c155cd7"      # Key Vault Secrets Officer
readonly CERTIFICATES_OFFICER_ROLE="a4417e6f-fecd-4de8-b567-7b0420556985" # Key Vault Certificates Officer
readonly CRYPTO_USER_ROLE="12338af0-0e69-4776-bea7-57ae8d297424"          # Key Vault Crypto User
readonly OPERATOR_SCOPE="Operator.Access"
readonly OPERATOR_ROLES="Reader Operator Admin"
readonly CONSOLE_PATH="/api/console/"
readonly GRAPH="https://graph.microsoft.com/v1.0"

usage() {
  cat <<'USAGE'
Usage: infra/scripts/register-app.sh [options]

Options (each defaults to the azd environment value in brackets):
  --credential TYPE      managed-identity (no secret anywhere), certificate (key stays in
                         Key Vault) or secret [MSSP_CLIENT_CREDENTIAL, managed-identity]
  --fic-principal-id ID  principal (object) ID of the user-assigned identity whose token is
                         the federated credential [AZURE_FIC_IDENTITY_PRINCIPAL_ID]
  --app-principal-id ID  principal ID of the app's identity, granted Key Vault Crypto User
                         on the certificate's key [AZURE_MANAGED_IDENTITY_PRINCIPAL_ID]
  --certificate-name N   Key Vault certificate [MSSP_CLIENT_CERTIFICATE_NAME, mssp-client-certificate]
  --redirect-uri URI     consent callback URI [CONSENT_REDIRECT_URI]
  --vault-name NAME      Key Vault for the client secret or certificate [AZURE_KEY_VAULT_NAME]
  --secret-name NAME     vault secret of the client secret [MSSP_CLIENT_SECRET_NAME, mssp-client-secret]
  --function-app NAME    function app to update MSSP_CLIENT_ID on [AZURE_FUNCTION_APP_NAME]
  --resource-group NAME  its resource group [AZURE_RESOURCE_GROUP]
  --env-name NAME        environment the registration is tagged with (azd-env:NAME) [AZURE_ENV_NAME]
  --client-id GUID       use (and adopt) this existing app registration [MSSP_CLIENT_ID]
  --name NAME            display name ["MSSP Defender collector (<env>)"]
  --secret-years N       lifetime of a new client secret, in years (default 1)
  --console-redirect-uri URI
                         the console's SPA redirect URI [CONSOLE_REDIRECT_URI; else the
                         redirect URI with /api/console/ instead of /api/consent/callback]
  --operator-api-client-id GUID
                         use (and adopt) this operator API registration [OPERATOR_API_CLIENT_ID]
  --console-client-id GUID
                         use (and adopt) this console registration [OPERATOR_CONSOLE_CLIENT_ID]
  --no-operator-admin    do not give the signed-in user the operator API's Admin role
  --deployer-ip IP       this machine's public IP, opened on a private vault while the
                         script runs [DEPLOYER_IP; otherwise looked up with curl]
  --rotate               add a new client secret (or certificate version) and use it
  --prune-old-secrets    delete this script's older client secrets of the app and disable
                         older vault versions (run after the app runs on the new secret)
  --no-azd               do not read or write the azd environment
  --from-azd-hook        used by the azure.yaml postprovision hook; skipped when
                         MSSP_SKIP_APP_REGISTRATION=true
  -h, --help             show this help
USAGE
}

log() { printf 'register-app: %s\n' "$*" >&2; }

# What the script changed, printed at the end (also after a failure).
done_list=()
did() {
  done_list+=("$*")
  log "$*"
}

die() {
  log "error: $*"
  exit 1
}

redirect_uri=""
vault_name=""
secret_name=""
credential=""
fic_principal_id=""
app_principal_id=""
certificate_name=""
function_app=""
resource_group=""
env_name=""
client_id=""
client_id_explicit=false
display_name=""
secret_years="1"
deployer_ip="${DEPLOYER_IP:-}"
rotate=false
prune=false
use_azd=true
from_hook=false
retry_seconds="${REGISTER_APP_RETRY_SECONDS:-15}"
console_redirect_uri=""
operator_api_id=""
console_id=""
operator_admin=true

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
  --credential) need_value "$@"; credential="$2"; shift 2 ;;
  --fic-principal-id) need_value "$@"; fic_principal_id="$2"; shift 2 ;;
  --app-principal-id) need_value "$@"; app_principal_id="$2"; shift 2 ;;
  --certificate-name) need_value "$@"; certificate_name="$2"; shift 2 ;;
  --redirect-uri) need_value "$@"; redirect_uri="$2"; shift 2 ;;
  --vault-name) need_value "$@"; vault_name="$2"; shift 2 ;;
  --secret-name) need_value "$@"; secret_name="$2"; shift 2 ;;
  --function-app) need_value "$@"; function_app="$2"; shift 2 ;;
  --resource-group) need_value "$@"; resource_group="$2"; shift 2 ;;
  --env-name) need_value "$@"; env_name="$2"; shift 2 ;;
  --client-id) need_value "$@"; client_id="$2"; client_id_explicit=true; shift 2 ;;
  --name) need_value "$@"; display_name="$2"; shift 2 ;;
  --secret-years) need_value "$@"; secret_years="$2"; shift 2 ;;
  --console-redirect-uri) need_value "$@"; console_redirect_uri="$2"; shift 2 ;;
  --operator-api-client-id) need_value "$@"; operator_api_id="$2"; shift 2 ;;
  --console-client-id) need_value "$@"; console_id="$2"; shift 2 ;;
  --no-operator-admin) operator_admin=false; shift ;;
  --deployer-ip) need_value "$@"; deployer_ip="$2"; shift 2 ;;
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
[[ "$retry_seconds" =~ ^[0-9]+$ ]] || die "REGISTER_APP_RETRY_SECONDS must be a whole number"
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

[[ -n "$credential" ]] || credential="$(env_value MSSP_CLIENT_CREDENTIAL)"
[[ -n "$credential" ]] || credential="managed-identity"
[[ -n "$fic_principal_id" ]] || fic_principal_id="$(env_value AZURE_FIC_IDENTITY_PRINCIPAL_ID)"
[[ -n "$app_principal_id" ]] || app_principal_id="$(env_value AZURE_MANAGED_IDENTITY_PRINCIPAL_ID)"
[[ -n "$certificate_name" ]] || certificate_name="$(env_value MSSP_CLIENT_CERTIFICATE_NAME)"
[[ -n "$certificate_name" ]] || certificate_name="mssp-client-certificate"
[[ -n "$redirect_uri" ]] || redirect_uri="$(env_value CONSENT_REDIRECT_URI)"
[[ -n "$vault_name" ]] || vault_name="$(env_value AZURE_KEY_VAULT_NAME)"
[[ -n "$secret_name" ]] || secret_name="$(env_value MSSP_CLIENT_SECRET_NAME)"
[[ -n "$secret_name" ]] || secret_name="mssp-client-secret"
[[ -n "$function_app" ]] || function_app="$(env_value AZURE_FUNCTION_APP_NAME)"
[[ -n "$resource_group" ]] || resource_group="$(env_value AZURE_RESOURCE_GROUP)"
[[ -n "$env_name" ]] || env_name="$(env_value AZURE_ENV_NAME)"
if [[ -z "$client_id" ]]; then
  # Set by an earlier run of this script (or by hand): as good as --client-id.
  client_id="$(env_value MSSP_CLIENT_ID)"
  [[ -z "$client_id" ]] || client_id_explicit=true
fi
[[ -n "$display_name" ]] || display_name="MSSP Defender collector${env_name:+ ($env_name)}"
[[ -n "$console_redirect_uri" ]] || console_redirect_uri="$(env_value CONSOLE_REDIRECT_URI)"
[[ -n "$console_redirect_uri" ]] || console_redirect_uri="${redirect_uri%"$CALLBACK_PATH"}$CONSOLE_PATH"
[[ -n "$operator_api_id" ]] || operator_api_id="$(env_value OPERATOR_API_CLIENT_ID)"
[[ -n "$console_id" ]] || console_id="$(env_value OPERATOR_CONSOLE_CLIENT_ID)"
env_tag="azd-env:${env_name}"

[[ -n "$redirect_uri" ]] || die "no redirect URI: run 'azd provision' first or pass --redirect-uri https://<app host>$CALLBACK_PATH"
[[ "$redirect_uri" == https://* ]] || die "the redirect URI must use https: $redirect_uri"
[[ "$redirect_uri" == *"$CALLBACK_PATH" ]] || log "warning: the app's callback is $CALLBACK_PATH; $redirect_uri does not end with it"
[[ "$console_redirect_uri" == https://*"$CONSOLE_PATH" && "$console_redirect_uri" != *[\"\\]* ]] ||
  die "the console redirect URI must be https://<app host>$CONSOLE_PATH: $console_redirect_uri"
[[ "$secret_name" =~ ^[0-9A-Za-z-]{1,127}$ ]] || die "--secret-name must be a Key Vault secret name"
[[ "$certificate_name" =~ ^[0-9A-Za-z-]{1,127}$ ]] || die "--certificate-name must be a Key Vault certificate name"
[[ -n "$env_name" || -n "$client_id" ]] || die "no environment name to tag the app registration with: pass --env-name (or --client-id of an existing registration)"
case "$credential" in
managed-identity | certificate | secret) ;;
*) die "--credential must be managed-identity, certificate or secret, not $credential" ;;
esac
guid_re='^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
if [[ "$credential" == "managed-identity" ]]; then
  [[ "$fic_principal_id" =~ $guid_re ]] || die "no principal ID of the managed identity for the federated credential: run 'azd provision' first or pass --fic-principal-id"
else
  [[ -n "$vault_name" ]] || die "no Key Vault: run 'azd provision' first or pass --vault-name"
fi
if [[ "$credential" == "certificate" ]]; then
  [[ "$app_principal_id" =~ $guid_re ]] || die "no principal ID of the app's identity to grant Key Vault Crypto User: run 'azd provision' first or pass --app-principal-id"
  command -v openssl >/dev/null 2>&1 || die "openssl is needed to compute the certificate's SHA-256 thumbprint"
fi

az account show --output none 2>/dev/null || die "not logged in: run 'az login' (the tenant that should own the app registration)"

# --- Temporary access to the vault, undone on exit ---------------------------------------

vault_id=""
temp_role_id=""
opened_ip=""
reenable_private=false

cleanup() {
  local status=$?
  set +eu
  if [[ -n "$temp_role_id" ]]; then
    if az role assignment delete --ids "$temp_role_id" --output none; then
      did "removed the temporary $vault_role_name assignment"
    else
      log "warning: could not remove the role assignment $temp_role_id: delete it (az role assignment delete --ids $temp_role_id)"
    fi
  fi
  if [[ -n "$opened_ip" ]]; then
    if az keyvault network-rule remove --name "$vault_name" --ip-address "$opened_ip" --output none; then
      did "closed the vault firewall to $opened_ip again"
    else
      log "warning: could not remove $opened_ip from the firewall of $vault_name: remove it (or run azd provision)"
    fi
  fi
  if $reenable_private; then
    if az keyvault update --name "$vault_name" --public-network-access Disabled --output none; then
      did "turned public network access of $vault_name off again"
    else
      log "warning: public network access of $vault_name is still on: turn it off (or run azd provision)"
    fi
  fi
  if [[ ${#done_list[@]} -eq 0 ]]; then
    log "summary: nothing changed"
  else
    log "summary of what this run did:"
    for item in "${done_list[@]}"; do log "  - $item"; done
  fi
  [[ $status -eq 0 ]] || log "stopped with an error (exit $status); the steps above were done, the rest was not"
  exit $status
}
trap cleanup EXIT

# This machine's public IP address (for the vault firewall).
public_ip() {
  if [[ -n "$deployer_ip" ]]; then
    printf '%s' "$deployer_ip"
    return 0
  fi
  command -v curl >/dev/null 2>&1 || return 1
  curl -fsS --max-time 10 https://api.ipify.org 2>/dev/null
}

# Opens a private vault to this machine only (main.bicep vnetEnabled).
open_vault_firewall() {
  local info access action ip
  info="$(az_tsv keyvault show --name "$vault_name" --query "[id, properties.publicNetworkAccess, properties.networkAcls.defaultAction]")" ||
    die "cannot read the Key Vault $vault_name (az keyvault show)"
  IFS=$'\t' read -r vault_id access action <<<"$info"
  if [[ "$access" != "Disabled" && "$action" != "Deny" ]]; then
    return 0
  fi
  ip="$(public_ip)" || die "the vault $vault_name is private and this machine's public IP is unknown: pass --deployer-ip"
  [[ "$ip" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "not an IPv4 address: $ip (pass --deployer-ip)"
  if [[ "$access" == "Disabled" ]]; then
    az keyvault update --name "$vault_name" --public-network-access Enabled --default-action Deny --output none
    reenable_private=true
    did "turned public network access of $vault_name on, limited to its firewall, while this script runs"
  fi
  az keyvault network-rule add --name "$vault_name" --ip-address "$ip/32" --output none
  opened_ip="$ip/32"
  did "opened the vault firewall to $ip while this script runs"
}

# The signed-in principal's object id and type, for the temporary role assignment.
signed_in_principal() {
  local type name
  type="$(az_tsv account show --query user.type)"
  if [[ "$type" == "user" ]]; then
    printf '%s\tUser' "$(az_tsv ad signed-in-user show --query id)"
  else
    name="$(az_tsv account show --query user.name)"
    printf '%s\tServicePrincipal' "$(az_tsv ad sp show --id "$name" --query id)"
  fi
}

# The vault object this run manages: the client secret, or the certificate.
if [[ "$credential" == "certificate" ]]; then
  vault_kind="certificate"
  vault_object="$certificate_name"
  vault_collection="certificates"
  vault_role="$CERTIFICATES_OFFICER_ROLE"
  vault_role_name="Key Vault Certificates Officer"
else
  vault_kind="secret"
  vault_object="$secret_name"
  vault_collection="secrets"
  vault_role="$SECRETS_OFFICER_ROLE"
  vault_role_name="Key Vault Secrets Officer"
fi

# Grants the signed-in principal the vault role for the object (on the vault while the
# object does not exist yet), removed on exit.
grant_temporary_role() {
  local principal object_id principal_type scope
  principal="$(signed_in_principal)"
  IFS=$'\t' read -r object_id principal_type <<<"$principal"
  [[ -n "$object_id" ]] || die "cannot find the object id of the signed-in principal"
  if az resource show --ids "$vault_id/$vault_collection/$vault_object" --query id --output none 2>/dev/null; then
    scope="$vault_id/$vault_collection/$vault_object"
  else
    scope="$vault_id"
  fi
  temp_role_id="$(az_tsv role assignment create --assignee-object-id "$object_id" --assignee-principal-type "$principal_type" \
    --role "$vault_role" --scope "$scope" --query id)" ||
    die "cannot grant yourself $vault_role_name on $scope: ask someone with Owner or Role Based Access Control Administrator, or deploy with DEPLOYER_DATA_ACCESS=true"
  did "granted you $vault_role_name on ${scope#"$vault_id"/} of $vault_name while this script runs"
}

# Waits until the secret (or certificate) can be read: opens the firewall, grants the role
# when the deployer has none, and retries while both propagate (usually seconds, at worst
# a few minutes).
ensure_vault_access() {
  local attempt err granted=false
  open_vault_firewall
  for attempt in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    # The object itself is the probe: a role scoped to it cannot list the vault.
    if err="$(az keyvault "$vault_kind" show --vault-name "$vault_name" --name "$vault_object" --query id --output none 2>&1)"; then
      return 0
    fi
    case "$err" in
    *SecretNotFound* | *CertificateNotFound* | *"was not found"*) return 0 ;;
    *ForbiddenByFirewall* | *"Client address is not authorized"* | *"Public network access is disabled"*)
      log "the vault firewall change has not reached $vault_name yet; retrying ($attempt/20)"
      ;;
    *Forbidden* | *"not authorized"* | *"does not have secrets"*)
      if ! $granted; then
        granted=true
        grant_temporary_role
      fi
      log "waiting for the role assignment to reach $vault_name ($attempt/20)"
      ;;
    *) die "cannot read $vault_name/$vault_object: $err" ;;
    esac
    sleep "$retry_seconds"
  done
  die "still no access to $vault_name/$vault_object; run the script again in a few minutes"
}

# --- App registration -----------------------------------------------------------------

# OData string literal: single quotes doubled.
odata_quote() {
  local q="'"
  printf "'%s'" "${1//$q/$q$q}"
}

app_tags() { az_tsv ad app show --id "$1" --query "join(',', tags)" 2>/dev/null || true; }
has_env_tag() { [[ ",$(app_tags "$1")," == *",$env_tag,"* ]]; }

# Finds (or adopts) an app registration: the explicit ID, else the exact display name (a
# prefix search could find another environment's app) carrying this environment's tag.
# Sets found_app (empty when none exists yet). Not run in a subshell: it records what it did.
# $3: the flag that passes the ID, for the messages.
found_app=""
find_tagged_app() {
  local name="$1" explicit="$2" flag="$3" tagged="" untagged="" app_id tags
  found_app=""
  if [[ -n "$explicit" ]]; then
    az ad app show --id "$explicit" --output none 2>/dev/null ||
      die "the app registration $explicit ($name) does not exist in this tenant (az account show): pass another $flag or clear it in the azd environment"
    if [[ -n "$env_name" ]] && ! has_env_tag "$explicit"; then
      az ad app update --id "$explicit" --add tags "$env_tag" --output none
      did "adopted the app registration $explicit for environment $env_name (tag $env_tag)"
    fi
    found_app="$explicit"
  else
    while IFS=$'\t' read -r app_id tags; do
      [[ -n "$app_id" ]] || continue
      if [[ ",$tags," == *",$env_tag,"* ]]; then
        tagged="${tagged:+$tagged }$app_id"
      else
        untagged="${untagged:+$untagged }$app_id"
      fi
    done < <(az_tsv ad app list --filter "displayName eq $(odata_quote "$name")" --query "[].[appId, join(',', tags)]")
    case "$tagged" in
    *" "*) die "several app registrations named '$name' carry $env_tag ($tagged): pass $flag" ;;
    "")
      [[ -z "$untagged" ]] ||
        die "an app registration named '$name' exists ($untagged) but lacks the tag $env_tag, so this script did not create it: refusing to adopt it. Pass $flag <appId> to adopt it"
      return 0
      ;;
    *) found_app="$tagged" ;;
    esac
  fi
  log "using the app registration $found_app ($name)"
}

find_tagged_app "$display_name" "$client_id" --client-id
client_id="$found_app"

if [[ -z "$client_id" ]]; then
  client_id="$(az_tsv ad app create --display-name "$display_name" \
    --sign-in-audience AzureADMultipleOrgs --web-redirect-uris "$redirect_uri" --query appId)"
  [[ -n "$client_id" ]] || die "az ad app create returned no appId"
  az ad app update --id "$client_id" --add tags "$env_tag" --output none
  did "created the app registration '$display_name' ($client_id), tagged $env_tag"
fi

audience="$(az_tsv ad app show --id "$client_id" --query signInAudience)"
if [[ "$audience" != "AzureADMultipleOrgs" ]]; then
  az ad app update --id "$client_id" --sign-in-audience AzureADMultipleOrgs --output none
  did "set the sign-in audience to AzureADMultipleOrgs (was $audience)"
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
  az ad app update --id "$client_id" --web-redirect-uris ${redirect_uris[@]+"${redirect_uris[@]}"} "$redirect_uri" --output none
  did "added the Web redirect URI $redirect_uri"
fi

# --- Read permissions of both alert sources: delegated and application ----------------

# Requests a delegated permission (scope) and an application permission (app role) of one
# API. Their IDs are read from the API's own service principal (published there, documented
# nowhere), never hard-coded; the service principal is created when this tenant lacks it.
#   $1 API app ID, $2 its name for messages, $3 delegated scope, $4 app role
request_api_permissions() {
  local api="$1" label="$2" scope="$3" role="$4" scope_query role_query scope_id role_id
  scope_query="oauth2PermissionScopes[?value=='$scope'].id | [0]"
  role_query="appRoles[?value=='$role'].id | [0]"
  scope_id="$(az_tsv ad sp show --id "$api" --query "$scope_query" 2>/dev/null || true)"
  if [[ -z "$scope_id" ]]; then
    az ad sp create --id "$api" --output none ||
      die "cannot create the $label service principal ($api); ask an administrator, or add the $label $scope and $role permissions in the portal"
    did "created the $label service principal in this tenant"
    scope_id="$(az_tsv ad sp show --id "$api" --query "$scope_query")"
  fi
  [[ -n "$scope_id" ]] || die "$label publishes no delegated permission named $scope"
  role_id="$(az_tsv ad sp show --id "$api" --query "$role_query")"
  [[ -n "$role_id" ]] || die "$label publishes no application permission named $role"

  if ! has_permission "$api" "$scope_id"; then
    az ad app permission add --id "$client_id" --api "$api" --api-permissions "$scope_id=Scope" --output none
    did "requested the delegated permission $label $scope (delegated mode: a customer's admin signs in and consents)"
  fi
  if ! has_permission "$api" "$role_id"; then
    az ad app permission add --id "$client_id" --api "$api" --api-permissions "$role_id=Role" --output none
    did "requested the application permission $label $role (application mode: a customer's admin grants admin consent)"
  fi
}

# $1 API app ID, $2 permission ID: already requested by the app registration?
has_permission() {
  [[ -n "$(az_tsv ad app show --id "$client_id" \
    --query "requiredResourceAccess[?resourceAppId=='$1'].resourceAccess[] | [?id=='$2'].id | [0]")" ]]
}

# The Defender for Endpoint API (source defender) and Microsoft Graph's security API
# (source graph, alerts_v2): each tenant's source decides which one its consent covers.
request_api_permissions "$DEFENDER_APP_ID" WindowsDefenderATP "$DEFENDER_SCOPE" "$DEFENDER_ROLE"
request_api_permissions "$GRAPH_APP_ID" "Microsoft Graph" "$GRAPH_SCOPE" "$GRAPH_ROLE"

if ! az ad sp show --id "$client_id" --output none 2>/dev/null; then
  if az ad sp create --id "$client_id" --output none; then
    did "created the app's service principal in this tenant"
  else
    log "warning: could not create the service principal (not needed for customer tenants)"
  fi
fi

# --- Client secret in Key Vault -------------------------------------------------------

# present:<clientId tag> | absent
secret_state() {
  local out err errfile
  errfile="$(mktemp)"
  # Only the clientId tag is printed; the error text holds no secret.
  if out="$(az_tsv keyvault secret show --vault-name "$vault_name" --name "$secret_name" --query "tags.clientId" 2>"$errfile")"; then
    rm -f "$errfile"
    [[ "$out" == "None" ]] && out=""
    printf 'present:%s' "$out"
    return 0
  fi
  err="$(cat "$errfile")"
  rm -f "$errfile"
  case "$err" in
  *NotFound* | *"was not found"*) printf 'absent' ;;
  *) log "$err"; return 1 ;;
  esac
}

# Expiry of a new client secret, now + N years, ISO 8601 UTC (GNU or BSD date).
secret_end_date() {
  date -u -d "+$secret_years years" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -v+"$secret_years"y +%Y-%m-%dT%H:%M:%SZ
}

# Reads a password on stdin and stores it as a new version of the vault secret, with the
# client secret's expiry as `expires`. Refuses an empty input, so a failed `credential
# reset` can never overwrite the secret with "". The value stays in a local shell variable
# and reaches az through a pipe (printf is a builtin): it is never printed, passed as an
# argument, or written to a file.
store_secret() {
  local credential_name="$1" expires="$2" password=""
  IFS= read -r password || true
  password="${password%$'\r'}"
  [[ -n "$password" ]] || return 1
  printf '%s' "$password" |
    az keyvault secret set --vault-name "$vault_name" --name "$secret_name" --file /dev/stdin \
      --expires "$expires" --content-type "client secret of app $client_id" \
      --tags "clientId=$client_id" "credential=$credential_name" --output none
}

new_credential() {
  local credential_name end_date
  credential_name="$CREDENTIAL_PREFIX $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  end_date="$(secret_end_date)"
  if ! az ad app credential reset --id "$client_id" --append --display-name "$credential_name" \
    --end-date "$end_date" --query password --output tsv | store_secret "$credential_name" "$end_date"; then
    log "storing the secret failed; removing the new client secret from the app registration"
    local key_id
    key_id="$(az_tsv ad app credential list --id "$client_id" --query "[?displayName=='$credential_name'].keyId | [0]" || true)"
    [[ -z "$key_id" ]] || az ad app credential delete --id "$client_id" --key-id "$key_id" --output none || true
    die "could not store the client secret in $vault_name"
  fi
  did "added a client secret ($credential_name, expires $end_date) and stored it in $vault_name/$secret_name with that expiry"
}

# --- Managed identity as a federated identity credential --------------------------------

ensure_federated_credential() {
  local tenant cloud login audience issuer existing current parameters
  tenant="$(az_tsv account show --query tenantId)"
  cloud="$(az_tsv cloud show --query name)"
  login="$(az_tsv cloud show --query endpoints.activeDirectory)"
  login="${login%/}"
  case "$cloud" in
  AzureUSGovernment) audience="api://AzureADTokenExchangeUSGov" ;;
  AzureChinaCloud) audience="api://AzureADTokenExchangeChina" ;;
  *) audience="api://AzureADTokenExchange" ;;
  esac
  issuer="$login/$tenant/v2.0"
  parameters="{\"name\":\"$FIC_NAME\",\"issuer\":\"$issuer\",\"subject\":\"$fic_principal_id\",\"audiences\":[\"$audience\"],\"description\":\"The collector's user-assigned managed identity (MSSP_CLIENT_CREDENTIAL=managed-identity)\"}"
  existing="$(az_tsv ad app federated-credential list --id "$client_id" --query "[?name=='$FIC_NAME'].name | [0]")"
  if [[ -z "$existing" ]]; then
    az ad app federated-credential create --id "$client_id" --parameters "$parameters" --output none
    did "added the federated identity credential $FIC_NAME (issuer $issuer, subject $fic_principal_id, audience $audience): no client secret is needed"
    return 0
  fi
  current="$(az_tsv ad app federated-credential list --id "$client_id" --query "[?name=='$FIC_NAME'] | [0].[issuer, subject, join(',', audiences)]")"
  if [[ "$current" != "$issuer"$'\t'"$fic_principal_id"$'\t'"$audience" ]]; then
    az ad app federated-credential update --id "$client_id" --federated-credential-id "$FIC_NAME" --parameters "$parameters" --output none
    did "updated the federated identity credential $FIC_NAME to issuer $issuer, subject $fic_principal_id, audience $audience"
  else
    log "the federated identity credential $FIC_NAME is in place"
  fi
}

# --- Certificate whose key stays in Key Vault -------------------------------------------

cert_key_id=""
cert_thumbprint=""

ensure_certificate() {
  local policy display key_id cer exists=false assignment scope
  if az keyvault certificate show --vault-name "$vault_name" --name "$certificate_name" --query id --output none 2>/dev/null; then
    exists=true
  fi
  if ! $exists || $rotate; then
    # Not exportable: the private key can be used for signing in the vault, never read.
    policy="{\"issuerParameters\":{\"name\":\"Self\"},\"keyProperties\":{\"exportable\":false,\"keyType\":\"RSA\",\"keySize\":2048,\"reuseKey\":false},\"secretProperties\":{\"contentType\":\"application/x-pkcs12\"},\"x509CertificateProperties\":{\"subject\":\"CN=$CREDENTIAL_PREFIX-$client_id\",\"validityInMonths\":12,\"keyUsage\":[\"digitalSignature\"]},\"lifetimeActions\":[{\"trigger\":{\"daysBeforeExpiry\":30},\"action\":{\"actionType\":\"EmailContacts\"}}]}"
    az keyvault certificate create --vault-name "$vault_name" --name "$certificate_name" --policy "$policy" --output none
    did "created a certificate version in $vault_name/$certificate_name with a non-exportable key"
  fi
  key_id="$(az_tsv keyvault certificate show --vault-name "$vault_name" --name "$certificate_name" --query kid)"
  cer="$(az_tsv keyvault certificate show --vault-name "$vault_name" --name "$certificate_name" --query cer)"
  [[ -n "$key_id" && -n "$cer" ]] || die "cannot read the certificate $vault_name/$certificate_name"
  cert_thumbprint="$(printf '%s' "$cer" | openssl base64 -d -A | openssl dgst -sha256 -binary | openssl base64 -A | tr '+/' '-_' | tr -d '=')"
  [[ ${#cert_thumbprint} -eq 43 ]] || die "could not compute the certificate's SHA-256 thumbprint"
  cert_key_id="$key_id"
  log "certificate: key $cert_key_id, x5t#S256 $cert_thumbprint (MSSP_CLIENT_CERTIFICATE_KEY_ID, MSSP_CLIENT_CERTIFICATE_THUMBPRINT)"
  display="$CREDENTIAL_PREFIX certificate $cert_thumbprint"
  if [[ -z "$(az_tsv ad app credential list --id "$client_id" --cert --query "[?displayName=='$display'].keyId | [0]")" ]]; then
    az ad app credential reset --id "$client_id" --append --keyvault "$vault_name" --cert "$certificate_name" --display-name "$display" --output none
    did "uploaded the certificate's public part to the app registration ($display)"
  fi
  # The app's identity may sign with this key only: not read it, not touch other keys.
  scope="$vault_id/keys/$certificate_name"
  assignment="$(az_tsv role assignment list --assignee "$app_principal_id" --scope "$scope" --role "$CRYPTO_USER_ROLE" --query "[0].id")"
  if [[ -z "$assignment" ]]; then
    az role assignment create --assignee-object-id "$app_principal_id" --assignee-principal-type ServicePrincipal \
      --role "$CRYPTO_USER_ROLE" --scope "$scope" --output none
    did "granted the app's identity Key Vault Crypto User on keys/$certificate_name only"
  fi
}

state=""
case "$credential" in
managed-identity)
  ensure_federated_credential
  log "credential: managed-identity; no client secret is created or stored"
  ;;
certificate)
  ensure_vault_access
  ensure_certificate
  ;;
secret)
  ensure_vault_access
  state="$(secret_state)" || die "cannot read $vault_name/$secret_name"
  case "$state" in
absent)
  new_credential
  ;;
present:*)
  owner="${state#present:}"
  if [[ -z "$owner" ]]; then
    die "$vault_name/$secret_name exists without a clientId tag, so it is not known to belong to $client_id: refusing to replace it. If it does, tag it (az keyvault secret set-attributes --vault-name $vault_name --name $secret_name --tags clientId=$client_id) and run again"
  fi
  if [[ "$owner" != "$client_id" ]]; then
    die "$vault_name/$secret_name holds the client secret of app $owner, not of $client_id: refusing to overwrite it. Use that app (--client-id $owner) or another vault or --secret-name"
  fi
  if $rotate; then
    new_credential
  else
    log "$vault_name/$secret_name exists for $client_id; keeping it (use --rotate for a new one)"
  fi
  ;;
  esac
  ;;
esac

if $prune && [[ "$credential" == "secret" ]]; then
  current="$(az_tsv keyvault secret show --vault-name "$vault_name" --name "$secret_name" --query "tags.credential")"
  [[ -n "$current" && "$current" != "None" ]] || die "the current vault version has no credential tag; prune by hand (az ad app credential list)"
  while IFS=$'\t' read -r key_id name; do
    [[ -n "$key_id" ]] || continue
    az ad app credential delete --id "$client_id" --key-id "$key_id" --output none
    did "deleted the older client secret '$name'"
  done < <(az_tsv ad app credential list --id "$client_id" \
    --query "[?starts_with(displayName || '', '$CREDENTIAL_PREFIX ') && displayName != '$current'].[keyId, displayName]")
  latest="$(az_tsv keyvault secret show --vault-name "$vault_name" --name "$secret_name" --query "id")"
  while IFS= read -r version_id; do
    [[ -n "$version_id" && "$version_id" != "$latest" ]] || continue
    az keyvault secret set-attributes --id "$version_id" --enabled false --output none
    did "disabled the old vault version ${version_id##*/}"
  done < <(az_tsv keyvault secret list-versions --vault-name "$vault_name" --name "$secret_name" \
    --query "[?attributes.enabled].id")
fi

# --- Operator registrations (single tenant) ---------------------------------------------

# A new GUID for a role or scope (uuidgen on macOS and most Linux; the kernel's otherwise).
new_guid() {
  if command -v uuidgen >/dev/null 2>&1; then
    uuidgen | tr '[:upper:]' '[:lower:]'
  else
    cat /proc/sys/kernel/random/uuid
  fi
}

# JSON of the items of an array except its brackets (az --output json), for splicing.
json_items() {
  local text
  text="$(tr -d '\r\n' <<<"$1")"
  text="${text#*[}"
  text="${text%]*}"
  [[ "$text" =~ [^[:space:]] ]] && printf '%s' "$text" || true
}

create_single_tenant_app() {
  local name="$1"
  found_app="$(az_tsv ad app create --display-name "$name" --sign-in-audience AzureADMyOrg --query appId)"
  [[ -n "$found_app" ]] || die "az ad app create returned no appId"
  az ad app update --id "$found_app" --add tags "$env_tag" --output none
  did "created the app registration '$name' ($found_app), tagged $env_tag"
}

# PATCH of an application through Microsoft Graph (az has no flags for these properties).
graph_patch_app() {
  az rest --method PATCH --url "$GRAPH/applications(appId='$1')" --headers "Content-Type=application/json" --body "$2" --output none
}

ensure_service_principal() {
  if ! az ad sp show --id "$1" --output none 2>/dev/null; then
    az ad sp create --id "$1" --output none
    did "created the service principal of $2"
  fi
}

operator_tenant="$(az_tsv account show --query tenantId)"
operator_api_name="MSSP Defender collector operator API${env_name:+ ($env_name)}"
console_name="MSSP Defender collector console${env_name:+ ($env_name)}"

find_tagged_app "$operator_api_name" "$operator_api_id" --operator-api-client-id
operator_api_id="$found_app"
[[ -n "$operator_api_id" ]] || { create_single_tenant_app "$operator_api_name"; operator_api_id="$found_app"; }
find_tagged_app "$console_name" "$console_id" --console-client-id
console_id="$found_app"
[[ -n "$console_id" ]] || { create_single_tenant_app "$console_name"; console_id="$found_app"; }

# App ID URI api://<appId>: scopes are requested as api://<appId>/Operator.Access.
identifier_uris=()
while IFS= read -r uri; do
  [[ -n "$uri" ]] && identifier_uris+=("$uri")
done < <(az_tsv ad app show --id "$operator_api_id" --query "identifierUris[]")
has_uri=false
for uri in ${identifier_uris[@]+"${identifier_uris[@]}"}; do
  [[ "$uri" == "api://$operator_api_id" ]] && has_uri=true
done
if ! $has_uri; then
  az ad app update --id "$operator_api_id" --identifier-uris ${identifier_uris[@]+"${identifier_uris[@]}"} "api://$operator_api_id" --output none
  did "set the App ID URI api://$operator_api_id on the operator API"
fi

# App roles Reader, Operator, Admin (User and Application), keeping their IDs and any other role.
roles_ok=true
role_entries=""
for role in $OPERATOR_ROLES; do
  line="$(az_tsv ad app show --id "$operator_api_id" --query "appRoles[?value=='$role'] | [0].[id, join(',', sort(allowedMemberTypes)), to_string(isEnabled)]")"
  IFS=$'\t' read -r role_id member_types enabled <<<"$line"
  if [[ -z "$role_id" || "$role_id" == "None" ]]; then
    role_id="$(new_guid)"
    roles_ok=false
  elif [[ "$member_types" != "Application,User" || "$enabled" != "true" ]]; then
    roles_ok=false
  fi
  case "$role" in
  Reader) description="Read tenants, alerts and health" ;;
  Operator) description="Reader, and onboard tenants, mint consent links, pull, reconcile, replay and export" ;;
  Admin) description="Operator, and offboard, purge, change destinations and retention, read the audit trail" ;;
  esac
  role_entries="${role_entries:+$role_entries,}{\"allowedMemberTypes\":[\"User\",\"Application\"],\"description\":\"$description\",\"displayName\":\"$role\",\"id\":\"$role_id\",\"isEnabled\":true,\"value\":\"$role\"}"
  eval "role_id_$role=\$role_id"
done
if ! $roles_ok; then
  others="$(json_items "$(az ad app show --id "$operator_api_id" --query "appRoles[?value!='Reader' && value!='Operator' && value!='Admin']" --output json | tr -d '\r')")"
  graph_patch_app "$operator_api_id" "{\"appRoles\":[${role_entries}${others:+,$others}]}"
  did "set the app roles $OPERATOR_ROLES (member types User and Application) on the operator API"
fi

# Access tokens v2, the scope Operator.Access, and the console pre-authorized for it.
scope_id="$(az_tsv ad app show --id "$operator_api_id" --query "api.oauth2PermissionScopes[?value=='$OPERATOR_SCOPE'].id | [0]")"
[[ "$scope_id" != "None" ]] || scope_id=""
token_version="$(az_tsv ad app show --id "$operator_api_id" --query "api.requestedAccessTokenVersion")"
preauthorized="$(az_tsv ad app show --id "$operator_api_id" --query "api.preAuthorizedApplications[?appId=='$console_id'].delegatedPermissionIds[] | [?@=='${scope_id:-none}'] | [0]")"
if [[ -z "$scope_id" || "$token_version" != "2" || -z "$preauthorized" || "$preauthorized" == "None" ]]; then
  [[ -n "$scope_id" ]] || scope_id="$(new_guid)"
  other_scopes="$(json_items "$(az ad app show --id "$operator_api_id" --query "api.oauth2PermissionScopes[?value!='$OPERATOR_SCOPE']" --output json | tr -d '\r')")"
  other_apps="$(json_items "$(az ad app show --id "$operator_api_id" --query "api.preAuthorizedApplications[?appId!='$console_id']" --output json | tr -d '\r')")"
  scope_json="{\"adminConsentDescription\":\"Operate the MSSP Defender collector with the app roles assigned to you\",\"adminConsentDisplayName\":\"Operate the collector\",\"id\":\"$scope_id\",\"isEnabled\":true,\"type\":\"User\",\"userConsentDescription\":\"Operate the MSSP Defender collector with the app roles assigned to you\",\"userConsentDisplayName\":\"Operate the collector\",\"value\":\"$OPERATOR_SCOPE\"}"
  graph_patch_app "$operator_api_id" "{\"api\":{\"requestedAccessTokenVersion\":2,\"oauth2PermissionScopes\":[${scope_json}${other_scopes:+,$other_scopes}],\"preAuthorizedApplications\":[{\"appId\":\"$console_id\",\"delegatedPermissionIds\":[\"$scope_id\"]}${other_apps:+,$other_apps}]}}"
  did "set access tokens v2, the scope $OPERATOR_SCOPE and the console's pre-authorization on the operator API"
fi

# The console: a single-page app (auth code + PKCE, no secret) allowed to ask for Operator.Access.
spa_uris=()
while IFS= read -r uri; do
  [[ -n "$uri" ]] && spa_uris+=("$uri")
done < <(az_tsv ad app show --id "$console_id" --query "spa.redirectUris[]")
has_spa=false
spa_json=""
for uri in ${spa_uris[@]+"${spa_uris[@]}"}; do
  [[ "$uri" == "$console_redirect_uri" ]] && has_spa=true
  spa_json="${spa_json:+$spa_json,}\"$uri\""
done
if ! $has_spa; then
  graph_patch_app "$console_id" "{\"spa\":{\"redirectUris\":[${spa_json:+$spa_json,}\"$console_redirect_uri\"]}}"
  did "added the single-page app redirect URI $console_redirect_uri to the console"
fi
console_permission="$(az_tsv ad app show --id "$console_id" \
  --query "requiredResourceAccess[?resourceAppId=='$operator_api_id'].resourceAccess[] | [?id=='$scope_id'].id | [0]")"
if [[ -z "$console_permission" || "$console_permission" == "None" ]]; then
  az ad app permission add --id "$console_id" --api "$operator_api_id" --api-permissions "$scope_id=Scope" --output none
  did "requested the operator API's $OPERATOR_SCOPE for the console"
fi

ensure_service_principal "$operator_api_id" "the operator API"
ensure_service_principal "$console_id" "the console"
if [[ "$(az_tsv ad sp show --id "$operator_api_id" --query appRoleAssignmentRequired)" != "true" ]]; then
  az ad sp update --id "$operator_api_id" --set appRoleAssignmentRequired=true --output none
  did "made the operator API require a role assignment (only assigned users and applications get tokens)"
fi

if $operator_admin && [[ "$(az_tsv account show --query user.type)" == "user" ]]; then
  me="$(az_tsv ad signed-in-user show --query id)"
  api_sp="$(az_tsv ad sp show --id "$operator_api_id" --query id)"
  assigned="$(az_tsv rest --method GET --url "$GRAPH/servicePrincipals/$api_sp/appRoleAssignedTo" --query "value[?principalId=='$me'].appRoleId | [0]")"
  if [[ -z "$assigned" || "$assigned" == "None" ]]; then
    az rest --method POST --url "$GRAPH/servicePrincipals/$api_sp/appRoleAssignedTo" --headers "Content-Type=application/json" \
      --body "{\"principalId\":\"$me\",\"resourceId\":\"$api_sp\",\"appRoleId\":\"$role_id_Admin\"}" --output none
    did "gave you the operator API's Admin role (assign Reader, Operator or Admin to others in Enterprise applications > $operator_api_name > Users and groups)"
  fi
fi

# --- Settings -------------------------------------------------------------------------

if $use_azd && [[ "$(azd_value MSSP_CLIENT_ID)" != "$client_id" ]]; then
  azd env set MSSP_CLIENT_ID "$client_id"
  did "set MSSP_CLIENT_ID=$client_id in the azd environment (the next 'azd provision' keeps it in the app settings)"
fi
if $use_azd && [[ "$credential" == "certificate" ]]; then
  for pair in "MSSP_CLIENT_CERTIFICATE_KEY_ID=$cert_key_id" "MSSP_CLIENT_CERTIFICATE_THUMBPRINT=$cert_thumbprint"; do
    if [[ "$(azd_value "${pair%%=*}")" != "${pair#*=}" ]]; then
      azd env set "${pair%%=*}" "${pair#*=}"
      did "set ${pair%%=*} in the azd environment"
    fi
  done
fi

if $use_azd; then
  for pair in "OPERATOR_TENANT_ID=$operator_tenant" "OPERATOR_API_CLIENT_ID=$operator_api_id" "OPERATOR_CONSOLE_CLIENT_ID=$console_id"; do
    if [[ "$(azd_value "${pair%%=*}")" != "${pair#*=}" ]]; then
      azd env set "${pair%%=*}" "${pair#*=}"
      did "set $pair in the azd environment (Bicep passes it to the app settings)"
    fi
  done
fi

if [[ -n "$function_app" && -n "$resource_group" ]]; then
  operator_settings="$(az_tsv functionapp config appsettings list --resource-group "$resource_group" --name "$function_app" \
    --query "[?name=='OPERATOR_TENANT_ID' || name=='OPERATOR_API_CLIENT_ID' || name=='OPERATOR_CONSOLE_CLIENT_ID'].[name, value]" 2>/dev/null || true)"
  wanted="OPERATOR_API_CLIENT_ID=$operator_api_id OPERATOR_CONSOLE_CLIENT_ID=$console_id OPERATOR_TENANT_ID=$operator_tenant"
  current="$(printf '%s\n' "$operator_settings" | awk -F '\t' 'NF == 2 { print $1 "=" $2 }' | sort | tr '\n' ' ')"
  if [[ "${current% }" != "$wanted" ]]; then
    az functionapp config appsettings set --resource-group "$resource_group" --name "$function_app" \
      --settings "OPERATOR_TENANT_ID=$operator_tenant" "OPERATOR_API_CLIENT_ID=$operator_api_id" "OPERATOR_CONSOLE_CLIENT_ID=$console_id" --output none
    did "set OPERATOR_TENANT_ID, OPERATOR_API_CLIENT_ID and OPERATOR_CONSOLE_CLIENT_ID on $function_app"
  fi
  deployed="$(az_tsv functionapp config appsettings list --resource-group "$resource_group" --name "$function_app" \
    --query "[?name=='MSSP_CLIENT_ID'].value | [0]" 2>/dev/null || true)"
  if [[ "$credential" == "certificate" ]]; then
    deployed_key="$(az_tsv functionapp config appsettings list --resource-group "$resource_group" --name "$function_app" \
      --query "[?name=='MSSP_CLIENT_CERTIFICATE_KEY_ID'].value | [0]" 2>/dev/null || true)"
    if [[ "$deployed_key" != "$cert_key_id" ]]; then
      az functionapp config appsettings set --resource-group "$resource_group" --name "$function_app" \
        --settings "MSSP_CLIENT_CERTIFICATE_KEY_ID=$cert_key_id" "MSSP_CLIENT_CERTIFICATE_THUMBPRINT=$cert_thumbprint" --output none
      did "set MSSP_CLIENT_CERTIFICATE_KEY_ID and MSSP_CLIENT_CERTIFICATE_THUMBPRINT on $function_app"
    fi
  fi
  if [[ "$deployed" != "$client_id" ]]; then
    az functionapp config appsettings set --resource-group "$resource_group" --name "$function_app" \
      --settings "MSSP_CLIENT_ID=$client_id" --output none
    did "set MSSP_CLIENT_ID on $function_app (which also re-reads Key Vault references)"
  elif [[ "$credential" == "secret" ]] && { [[ "$state" == "absent" ]] || $rotate; }; then
    # No settings change to trigger it: ask App Service to re-read the Key Vault references.
    site_id="$(az_tsv functionapp show --resource-group "$resource_group" --name "$function_app" --query id)"
    if az rest --method post --url "$site_id/config/configreferences/appsettings/refresh?api-version=2022-03-01" --output none; then
      did "asked $function_app to re-read its Key Vault references"
    else
      log "warning: could not refresh Key Vault references; the app picks up the new secret within 24 hours or on restart with a settings change"
    fi
  fi
else
  log "no function app given: set MSSP_CLIENT_ID=$client_id in its app settings yourself"
fi

log "done. Client id: $client_id. Redirect URI: $redirect_uri. Credential: $credential"
log "operators: API $operator_api_id, console $console_id (tenant $operator_tenant); console: $console_redirect_uri"
