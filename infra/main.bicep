// Entry point for `azd up` / `azd provision`: one resource group with the MSSP Defender
// collector (Flex Consumption function app, storage, Key Vault, monitoring, alert rules).
// `npm test` compiles and lints it (test/bicep.test.ts); `azd provision --preview` shows
// what a deployment would change.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; used for the resource group name and the resource name suffix.')
param environmentName string

@minLength(1)
@description('Region of every resource. It must support Flex Consumption (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group name. Default: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Object id of the deploying user. azd always fills it (AZURE_PRINCIPAL_ID) with whoever runs it, so it grants nothing by itself: see grantDeployerDataAccess.')
param principalId string = ''

@description('Give principalId the app\'s data roles (Key Vault Secrets Officer, storage blob/queue/table data roles): read and write access to every customer\'s refresh token. Only for a development environment that runs the app locally against these resources (DEPLOYER_DATA_ACCESS=true).')
param grantDeployerDataAccess bool = false

@description('Type of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Application (client) id of the multi-tenant MSSP app registration. infra/scripts/register-app.sh creates it and sets MSSP_CLIENT_ID in the azd environment.')
param msspClientId string = ''

@description('Tenant (directory) id of the MSSP\'s own tenant, where operators sign in. Empty: the tenant of the subscription.')
param operatorTenantId string = ''

@description('Application (client) id of the operator API registration (scope Operator.Access, app roles Reader, Operator, Admin). infra/scripts/register-app.sh creates it and sets OPERATOR_API_CLIENT_ID in the azd environment.')
param operatorApiClientId string = ''

@description('Application (client) id of the console\'s single-page app registration (infra/scripts/register-app.sh; OPERATOR_CONSOLE_CLIENT_ID). Empty: the console says sign-in is not configured.')
param operatorConsoleClientId string = ''

@description('Days alerts are kept (by their lastUpdateTime); a daily timer deletes older ones. More than the sweep\'s and the first pull\'s 7-day lookback.')
@minValue(8)
@maxValue(3650)
param alertRetentionDays int = 365

@description('Days the operator audit trail (table audit) is kept.')
@minValue(1)
@maxValue(3650)
param operatorAuditRetentionDays int = 400

@description('How the app authenticates at customer tenants\' token endpoints (MSSP_CLIENT_CREDENTIAL): managed-identity (default: the user-assigned identity as a federated identity credential of the app registration, no secret anywhere), certificate (a Key Vault certificate whose key never leaves the vault) or secret (a client secret in Key Vault).')
@allowed([
  'managed-identity'
  'certificate'
  'secret'
])
param clientCredential string = 'managed-identity'

@description('With managed-identity: name of a dedicated user-assigned identity for customer-tenant access (its token is the federated credential), separate from the identity that reaches storage and Key Vault. Empty: the app\'s one identity.')
param ficIdentityName string = ''

@description('With certificate: the Key Vault key identifier (with version) of the app\'s certificate; infra/scripts/register-app.sh sets MSSP_CLIENT_CERTIFICATE_KEY_ID in the azd environment.')
param clientCertificateKeyId string = ''

@description('With certificate: the certificate\'s SHA-256 thumbprint, base64url (x5t#S256); register-app.sh sets MSSP_CLIENT_CERTIFICATE_THUMBPRINT.')
param clientCertificateThumbprint string = ''

@description('Default Defender cloud for tenants that do not name one.')
@allowed([
  'commercial'
  'gcc'
  'gcc-high'
  'dod'
])
param defenderCloud string = 'commercial'

@description('NCRONTAB schedule (six fields) of the timer that queues tenant pulls. Empty: every five minutes.')
param pullSchedule string = '0 */5 * * * *'

@description('Node.js major version of the Functions runtime.')
@allowed([
  '22'
  '24'
])
param nodeVersion string = '22'

@description('Upper bound of Flex Consumption instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Key Vault name. Default: kv-<token>. Set a new one to redeploy an environment whose old vault is still soft-deleted.')
param keyVaultName string = ''

@description('Key Vault purge protection. Recommended for production: refresh tokens cannot be purged, but a deleted vault keeps its name reserved for the retention period.')
param enablePurgeProtection bool = true

@description('Days a deleted vault or secret stays recoverable.')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionInDays int = 90

@description('E-mail address for the alert rules\' action group. Empty: no action group.')
param alertEmail string = ''

@description('Minutes without a successful pull after which a tenant alerts.')
@minValue(15)
@maxValue(1440)
param stalePullThresholdMinutes int = 60

@description('Private networking: VNet integration for the app, private endpoints and private DNS for blob, queue, table and Key Vault, public network access off on storage and Key Vault. The function app itself stays reachable from the internet (consent routes).')
param vnetEnabled bool = false

@description('With vnetEnabled: a NAT gateway with a static public IP carries the app\'s outbound traffic (Entra ID, Defender, Graph, delivery destinations). Off: the subnet\'s default outbound access, switched on explicitly.')
param natGatewayEnabled bool = true

@description('Daily ingestion cap of the Log Analytics workspace, in GB (0: no cap). docs/deploy.md gives the volume per 100 tenants.')
@minValue(0)
@maxValue(1000)
param logDailyCapGb int = 5

@description('Days the Key Vault audit log (AZKVAuditLogs) is kept.')
@minValue(30)
@maxValue(730)
param auditRetentionDays int = 365

@description('Resource id of the Log Analytics workspace Microsoft Sentinel runs on (/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.OperationalInsights/workspaces/<name>). Set: the table MsspDefenderAlerts_CL and a data collection rule go into that workspace (its resource group and region), and the app delivers alerts there as destination "sentinel". Empty: no Sentinel destination. docs/delivery.md.')
param sentinelWorkspaceResourceId string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var names = {
  resourceGroup: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  identity: 'id-${resourceToken}'
  storage: 'st${resourceToken}'
  keyVault: !empty(keyVaultName) ? keyVaultName : 'kv-${resourceToken}'
  logAnalytics: 'log-${resourceToken}'
  applicationInsights: 'appi-${resourceToken}'
  plan: 'plan-${resourceToken}'
  functionApp: 'func-${resourceToken}'
  actionGroup: 'ag-${resourceToken}'
  alertPrefix: 'alert-${resourceToken}'
  vnet: 'vnet-${resourceToken}'
  natGateway: 'ng-${resourceToken}'
  dataCollectionRule: 'dcr-${resourceToken}'
}
var clientSecretName = 'mssp-client-secret'
var deploymentContainerName = 'app-package'
var effectivePullSchedule = empty(pullSchedule) ? '0 */5 * * * *' : pullSchedule
var sentinelEnabled = !empty(sentinelWorkspaceResourceId)
// /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.OperationalInsights/workspaces/<name>
var sentinelIdParts = split(sentinelWorkspaceResourceId, '/')
var sentinelWorkspaceRef = {
  subscriptionId: sentinelEnabled ? sentinelIdParts[2] : subscription().subscriptionId
  resourceGroup: sentinelEnabled ? sentinelIdParts[4] : names.resourceGroup
  name: sentinelEnabled ? last(sentinelIdParts) : 'none'
}
var useDedicatedFicIdentity = clientCredential == 'managed-identity' && !empty(ficIdentityName)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: names.resourceGroup
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

// A separate identity for customer-tenant access only: it holds no Azure role.
module ficIdentity 'modules/identity.bicep' = if (clientCredential == 'managed-identity' && !empty(ficIdentityName)) {
  name: 'fic-identity'
  scope: rg
  params: {
    name: ficIdentityName
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: names.storage
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    pullQueueName: 'tenant-pulls'
    vnetEnabled: vnetEnabled
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: names.keyVault
    location: location
    tags: tags
    enablePurgeProtection: enablePurgeProtection
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    vnetEnabled: vnetEnabled
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: names.logAnalytics
    applicationInsightsName: names.applicationInsights
    location: location
    tags: tags
    logDailyCapGb: logDailyCapGb
    auditRetentionDays: auditRetentionDays
  }
}

module network 'modules/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: names.vnet
    location: location
    tags: tags
    natGatewayEnabled: natGatewayEnabled
    natGatewayName: names.natGateway
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    identityPrincipalId: identity.outputs.principalId
    // azd fills principalId on every run: only the explicit switch grants anything.
    principalId: grantDeployerDataAccess ? principalId : ''
    principalType: principalType
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

// The workspace Sentinel runs on (it exists already; possibly in another subscription).
resource sentinelWorkspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = if (sentinelEnabled) {
  name: sentinelWorkspaceRef.name
  scope: resourceGroup(sentinelWorkspaceRef.subscriptionId, sentinelWorkspaceRef.resourceGroup)
}

module sentinel 'modules/sentinel.bicep' = if (sentinelEnabled) {
  name: 'sentinel-${resourceToken}'
  scope: resourceGroup(sentinelWorkspaceRef.subscriptionId, sentinelWorkspaceRef.resourceGroup)
  params: {
    workspaceName: sentinelWorkspaceRef.name
    location: sentinelWorkspace!.location
    dataCollectionRuleName: names.dataCollectionRule
    identityPrincipalId: identity.outputs.principalId
    tags: tags
  }
}

module app 'modules/app.bicep' = {
  name: 'app'
  scope: rg
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    nodeVersion: nodeVersion
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    msspClientId: msspClientId
    operatorTenantId: empty(operatorTenantId) ? tenant().tenantId : operatorTenantId
    operatorApiClientId: operatorApiClientId
    operatorConsoleClientId: operatorConsoleClientId
    alertRetentionDays: alertRetentionDays
    operatorAuditRetentionDays: operatorAuditRetentionDays
    defenderCloud: defenderCloud
    pullSchedule: effectivePullSchedule
    clientCredential: clientCredential
    clientSecretName: clientSecretName
    ficIdentityId: useDedicatedFicIdentity ? ficIdentity!.outputs.id : ''
    ficIdentityClientId: useDedicatedFicIdentity ? ficIdentity!.outputs.clientId : identity.outputs.clientId
    clientCertificateKeyId: clientCertificateKeyId
    clientCertificateThumbprint: clientCertificateThumbprint
    virtualNetworkSubnetId: vnetEnabled ? network!.outputs.appSubnetId : ''
    sentinelEnabled: sentinelEnabled
    sentinelDcrEndpoint: sentinelEnabled ? sentinel!.outputs.logsIngestionEndpoint : ''
    sentinelDcrImmutableId: sentinelEnabled ? sentinel!.outputs.immutableId : ''
    sentinelStream: sentinelEnabled ? sentinel!.outputs.streamName : ''
  }
  // The identity must hold its storage and Key Vault roles before the host starts.
  dependsOn: [
    rbac
  ]
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    location: location
    tags: tags
    namePrefix: names.alertPrefix
    actionGroupName: names.actionGroup
    alertEmail: alertEmail
    stalePullThresholdMinutes: stalePullThresholdMinutes
  }
}

// azd stores these in .azure/<env>/.env; register-app.sh and docs/deploy.md read them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output SERVICE_API_NAME string = app.outputs.name
output FUNCTION_APP_URL string = app.outputs.url
output CONSENT_REDIRECT_URI string = '${app.outputs.url}/api/consent/callback'
output CONSOLE_REDIRECT_URI string = '${app.outputs.url}/api/console/'
output OPERATOR_TENANT_ID string = empty(operatorTenantId) ? tenant().tenantId : operatorTenantId
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ID string = keyVault.outputs.id
output MSSP_CLIENT_SECRET_NAME string = clientSecretName
output VNET_ENABLED bool = vnetEnabled
output OUTBOUND_PUBLIC_IP string = vnetEnabled && natGatewayEnabled ? network!.outputs.natPublicIp : ''
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
// register-app.sh: which credential to set up, and the identity a federated credential names.
output MSSP_CLIENT_CREDENTIAL string = clientCredential
output AZURE_FIC_IDENTITY_PRINCIPAL_ID string = useDedicatedFicIdentity ? ficIdentity!.outputs.principalId : identity.outputs.principalId
output AZURE_FIC_IDENTITY_CLIENT_ID string = useDedicatedFicIdentity ? ficIdentity!.outputs.clientId : identity.outputs.clientId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
output ALERT_RULE_RECONSENT string = alerts.outputs.reconsentRuleName
output ALERT_RULE_STALE_PULL string = alerts.outputs.stalePullRuleName
output ALERT_RULE_DAILY_CAP string = alerts.outputs.dailyCapRuleName
output ALERT_RULE_CREDENTIAL_EXPIRING string = alerts.outputs.credentialRuleName
output SENTINEL_DCR_ID string = sentinelEnabled ? sentinel!.outputs.dataCollectionRuleId : ''
