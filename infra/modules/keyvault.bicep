// Key Vault for the customer tenants' refresh tokens (delegated mode) and, only when
// clientCredential chooses one, the MSSP app's client secret (mssp-client-secret) or its
// certificate with a non-exportable key (mssp-client-certificate). Access is Azure RBAC
// only (no access policies).

@description('Key Vault name (3-24 characters, globally unique; kept reserved while soft-deleted).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the vault.')
param tags object = {}

@description('Turn on purge protection. Once on it cannot be turned off, and a deleted vault (and its name) stays reserved for the whole retention period.')
param enablePurgeProtection bool = true

@description('Days a deleted vault or secret can be recovered. Fixed once the vault exists.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Private networking (main.bicep vnetEnabled): public network access off; the app reaches the vault through its private endpoint (network.bicep). infra/scripts/register-app.sh opens it to the deployer\'s IP address only while it runs.')
param vnetEnabled bool = false

@description('Log Analytics workspace that receives the vault\'s AuditEvent log (every read and write of a secret, with the caller).')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // The API refuses an explicit false: purge protection is either on or absent.
    enablePurgeProtection: enablePurgeProtection ? true : null
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
      bypass: vnetEnabled ? 'None' : 'AzureServices'
      ipRules: []
      virtualNetworkRules: []
    }
  }
}

// Audit trail of every secret access (who read which customer's refresh token, and when),
// in the resource-specific table AZKVAuditLogs (retention: monitoring.bicep).
resource audit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
