// Log Analytics workspace + workspace-based Application Insights. Local (instrumentation
// key) authentication is disabled: the app sends telemetry with its managed identity
// (APPLICATIONINSIGHTS_AUTHENTICATION_STRING) and needs Monitoring Metrics Publisher on
// the component (granted in rbac.bicep).

@description('Log Analytics workspace name.')
param logAnalyticsName string

@description('Application Insights component name.')
param applicationInsightsName string

@description('Azure region.')
param location string

@description('Tags applied to both resources.')
param tags object = {}

@description('Days the workspace keeps logs.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Daily ingestion cap of the workspace, in GB (0: no cap). Reaching it stops data collection until the next day, which silences the alert rules; alerts.bicep has a rule for that.')
@minValue(0)
@maxValue(1000)
param logDailyCapGb int = 5

@description('Days the workspace keeps the Key Vault audit log (table AZKVAuditLogs).')
@minValue(30)
@maxValue(730)
param auditRetentionDays int = 365

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    workspaceCapping: {
      dailyQuotaGb: logDailyCapGb == 0 ? -1 : logDailyCapGb
    }
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

// The resource-specific table Key Vault's AuditEvent diagnostic setting writes to
// (logAnalyticsDestinationType 'Dedicated'), kept longer than the workspace default.
resource vaultAuditTable 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = {
  parent: workspace
  name: 'AZKVAuditLogs'
  properties: {
    retentionInDays: auditRetentionDays
    totalRetentionInDays: auditRetentionDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

output logAnalyticsId string = workspace.id
output logAnalyticsName string = workspace.name
output vaultAuditTableName string = vaultAuditTable.name
output applicationInsightsId string = appInsights.id
output applicationInsightsName string = appInsights.name
output connectionString string = appInsights.properties.ConnectionString
