// Role assignments. The app's user-assigned identity gets exactly the data-plane roles it
// needs, each scoped to the one resource it is used on (no subscription or resource group
// scope, no control-plane roles). Optionally the deploying user (azd passes
// AZURE_PRINCIPAL_ID) gets the matching data roles so `func start` against the cloud
// resources works with az login credentials.
//
// Assignment names are deterministic: guid(scope id, principal id, role definition id),
// so re-running the deployment is idempotent. The principal ids come in as parameters
// because a name must be computable when the deployment starts.

@description('Principal (object) id of the app\'s user-assigned managed identity.')
param identityPrincipalId string

@description('Object id of the deploying user or CI principal to grant the same data roles. Empty: none.')
param principalId string = ''

@description('Type of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Storage account used by the host and by ALERTS_STORAGE.')
param storageAccountName string

@description('Key Vault holding refresh tokens and the client secret.')
param keyVaultName string

@description('Application Insights component the app sends telemetry to.')
param applicationInsightsName string

// Built-in role definition ids (Microsoft Learn, "Azure built-in roles").
var roles = {
  // Secrets only: create, read, new versions, disable old versions, delete, recover.
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  // Host storage blobs and the Flex Consumption deployment container.
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // tenant-pulls queue, its poison queue, host queues.
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  // App tables (tenants, alerts, consent state, ...).
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  // Entra ID authenticated telemetry ingestion (App Insights local auth is disabled).
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

var storageDataRoles = [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// --- The app's managed identity ---------------------------------------------------

resource identityStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in storageDataRoles: {
    name: guid(storage.id, identityPrincipalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId))
    scope: storage
    properties: {
      principalId: identityPrincipalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    }
  }
]

resource identityVaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identityPrincipalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer))
  scope: vault
  properties: {
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}

resource identityMetricsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identityPrincipalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher))
  scope: appInsights
  properties: {
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// --- The deploying user (optional, for local runs against the cloud resources) ------

resource userStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in storageDataRoles: if (!empty(principalId)) {
    name: guid(storage.id, principalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId))
    scope: storage
    properties: {
      principalId: principalId
      principalType: principalType
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    }
  }
]

resource userVaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(vault.id, principalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer))
  scope: vault
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}
