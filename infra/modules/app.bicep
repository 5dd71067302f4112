// The function app: Flex Consumption (FC1, Linux), Node runtime, one user-assigned
// identity for everything (host storage, deployment package, app data, Key Vault,
// Key Vault references, Application Insights), plus optionally a second one whose token
// is the federated credential at customer tenants. No keys or connection strings with
// secrets in app settings; no client secret at all unless clientCredential is 'secret'.

@description('Function app name (globally unique; also the default host name prefix).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region (must support Flex Consumption: az functionapp list-flexconsumption-locations).')
param location string

@description('Tags applied to the plan and the app (the app also gets azd-service-name).')
param tags object = {}

@description('azd service name in azure.yaml; azd finds the app by this tag.')
param serviceName string = 'api'

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Storage account (host storage, deployment container, ALERTS_STORAGE).')
param storageAccountName string

@description('Blob container for the deployment package.')
param deploymentContainerName string

@description('Application Insights component name.')
param applicationInsightsName string

@description('Key Vault name.')
param keyVaultName string

@description('Node.js major version of the Functions runtime.')
@allowed([
  '22'
  '24'
])
param nodeVersion string = '22'

@description('Upper bound of instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Application (client) id of the multi-tenant MSSP app registration (infra/scripts/register-app.sh). Empty until registered.')
param msspClientId string = ''

@description('The MSSP\'s own tenant, where operators sign in.')
param operatorTenantId string

@description('Application (client) id of the operator API registration. Empty until registered.')
param operatorApiClientId string = ''

@description('Application (client) id of the console\'s single-page app registration. Empty until registered.')
param operatorConsoleClientId string = ''

@description('Days alerts are kept.')
param alertRetentionDays int = 365

@description('Days the operator audit trail is kept.')
param operatorAuditRetentionDays int = 400

@description('Default Defender cloud for tenants that do not name one.')
@allowed([
  'commercial'
  'gcc'
  'gcc-high'
  'dod'
])
param defenderCloud string = 'commercial'

@description('NCRONTAB schedule (six fields) of the timer that queues tenant pulls.')
param pullSchedule string = '0 */5 * * * *'

@description('How the app authenticates at customer tenants (MSSP_CLIENT_CREDENTIAL).')
@allowed([
  'managed-identity'
  'certificate'
  'secret'
])
param clientCredential string = 'managed-identity'

@description('Key Vault secret holding the MSSP app\'s client secret (register-app.sh writes it, only with clientCredential secret). The app reads its expiry to warn before it runs out.')
param clientSecretName string = 'mssp-client-secret'

@description('Resource id of a dedicated user-assigned identity for customer-tenant access (managed-identity). Empty: the app\'s one identity.')
param ficIdentityId string = ''

@description('Client id of the identity whose token is the federated credential (MSSP_FIC_CLIENT_ID).')
param ficIdentityClientId string = ''

@description('With certificate: Key Vault key identifier of the app\'s certificate (MSSP_CLIENT_CERTIFICATE_KEY_ID).')
param clientCertificateKeyId string = ''

@description('With certificate: its SHA-256 thumbprint, base64url (MSSP_CLIENT_CERTIFICATE_THUMBPRINT).')
param clientCertificateThumbprint string = ''

@description('Subnet for VNet integration (network.bicep, with vnetEnabled). Empty: no VNet integration.')
param virtualNetworkSubnetId string = ''

@description('Extra app settings (for example PULL_OVERLAP_MINUTES). They cannot override the settings defined here.')
param additionalAppSettings object = {}

@description('Whether sentinel.bicep was deployed: the app then gets the Sentinel destination\'s settings.')
param sentinelEnabled bool = false

@description('Sentinel destination (sentinel.bicep): the data collection rule\'s logsIngestion endpoint.')
param sentinelDcrEndpoint string = ''

@description('Sentinel destination: the data collection rule\'s immutable id.')
param sentinelDcrImmutableId string = ''

@description('Sentinel destination: the rule\'s input stream (Custom-MsspDefenderAlerts_CL).')
param sentinelStream string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: empty(ficIdentityId)
      ? {
          '${identityId}': {}
        }
      : {
          '${identityId}': {}
          '${ficIdentityId}': {}
        }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Inbound stays public even with VNet integration: customers' browsers must reach the
    // consent routes, and the operator API is protected by function keys.
    publicNetworkAccess: 'Enabled'
    // Outbound through the app subnet (storage, Key Vault and Key Vault references over
    // private endpoints; the internet through the NAT gateway) when vnetEnabled.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    // Key Vault references (MSSP_CLIENT_SECRET) resolve with the user-assigned identity;
    // without this the platform would look for a system-assigned identity.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      // Flex Consumption takes the runtime from here: FUNCTIONS_WORKER_RUNTIME and
      // FUNCTIONS_EXTENSION_VERSION app settings are not allowed.
      runtime: {
        name: 'node'
        version: nodeVersion
      }
    }
  }
}

// No basic (user name / password) publishing credentials: deployments use Entra ID.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

var appSettings = {
  // Functions host storage: identity-based connection, no account key.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table

  // App data (tables + tenant-pulls queue trigger): identity-based connection.
  ALERTS_STORAGE__credential: 'managedidentity'
  ALERTS_STORAGE__clientId: identityClientId
  ALERTS_STORAGE__tableServiceUri: storage.properties.primaryEndpoints.table
  ALERTS_STORAGE__queueServiceUri: storage.properties.primaryEndpoints.queue

  // DefaultAzureCredential / ManagedIdentityCredential in the app (Key Vault, storage).
  AZURE_CLIENT_ID: identityClientId

  // Telemetry with Entra ID authentication (local auth is disabled on the component).
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // Sampling is configured in host.json only (requests and dependencies; never traces).

  // The app's own settings (shared/platform/config.ts).
  MSSP_CLIENT_ID: msspClientId
  MSSP_CLIENT_CREDENTIAL: clientCredential
  PUBLIC_BASE_URL: 'https://${functionApp.properties.defaultHostName}'
  KEY_VAULT_URL: vault.properties.vaultUri
  PULL_SCHEDULE: pullSchedule
  DEFENDER_CLOUD: defenderCloud

  // Operator sign-in (two single-tenant registrations in the MSSP tenant) and the data lifecycle.
  OPERATOR_TENANT_ID: operatorTenantId
  OPERATOR_API_CLIENT_ID: operatorApiClientId
  OPERATOR_CONSOLE_CLIENT_ID: operatorConsoleClientId
  ALERT_RETENTION_DAYS: string(alertRetentionDays)
  AUDIT_RETENTION_DAYS: string(operatorAuditRetentionDays)
}

// Delivery destinations the deployment creates (shared/delivery/config.ts reads
// DESTINATIONS__<name>__<FIELD>): Sentinel when sentinel.bicep was deployed.
var destinationSettings = sentinelEnabled
  ? {
      DESTINATIONS__sentinel__TYPE: 'sentinel'
      DESTINATIONS__sentinel__DCR_ENDPOINT: sentinelDcrEndpoint
      DESTINATIONS__sentinel__DCR_IMMUTABLE_ID: sentinelDcrImmutableId
      DESTINATIONS__sentinel__STREAM: sentinelStream
    }
  : {}
// Only the chosen credential's settings: with the default (managed-identity) no setting
// names or references a client secret.
var secretSettings = {
  MSSP_CLIENT_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${clientSecretName})'
  MSSP_CLIENT_SECRET_NAME: clientSecretName
}
var ficSettings = {
  MSSP_FIC_CLIENT_ID: ficIdentityClientId
}
var certificateSettings = {
  MSSP_CLIENT_CERTIFICATE_KEY_ID: clientCertificateKeyId
  MSSP_CLIENT_CERTIFICATE_THUMBPRINT: clientCertificateThumbprint
}

// Set after the site exists, so PUBLIC_BASE_URL can use its real default host name.
resource appSettingsConfig 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: union(
    additionalAppSettings,
    appSettings,
    destinationSettings,
    clientCredential == 'secret' ? secretSettings : {},
    clientCredential == 'managed-identity' ? ficSettings : {},
    clientCredential == 'certificate' ? certificateSettings : {}
  )
}

output id string = functionApp.id
output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
output url string = 'https://${functionApp.properties.defaultHostName}'
