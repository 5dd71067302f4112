// The Microsoft Sentinel destination (shared/delivery/destinations/sentinel.ts), deployed
// into the resource group of an existing Log Analytics workspace (the one Sentinel runs
// on): the custom table MsspDefenderAlerts_CL, a data collection rule of kind Direct in the
// workspace's region (it carries its own logsIngestion endpoint, no separate DCE), and
// Monitoring Metrics Publisher on that rule for the app's identity. main.bicep deploys it
// only when sentinelWorkspaceResourceId is set and writes the outputs into the app's
// DESTINATIONS__sentinel__* settings. docs/delivery.md documents the table.

@description('Name of the existing Log Analytics workspace (in this module\'s resource group).')
param workspaceName string

@description('Region of the workspace: the data collection rule must be in the same one.')
param location string

@description('Name of the data collection rule.')
param dataCollectionRuleName string

@description('Principal (object) id of the app\'s user-assigned managed identity.')
param identityPrincipalId string

@description('Tags applied to the data collection rule.')
param tags object = {}

var tableName = 'MsspDefenderAlerts_CL'
var streamName = 'Custom-${tableName}'

// Exactly the columns sentinel.ts sends (SENTINEL_COLUMNS; test/infra.test.ts compares).
// Stream declarations spell the type `datetime`, tables `dateTime`.
var columns = [
  { name: 'TimeGenerated', type: 'datetime', description: 'When the collector sent the row (replays and late-found alerts land in current time ranges).' }
  { name: 'LastUpdateTime', type: 'datetime', description: 'The alert\'s own last update time.' }
  { name: 'CustomerTenantId', type: 'string', description: 'Entra tenant id of the customer.' }
  { name: 'CustomerName', type: 'string', description: 'The customer\'s display name in the collector.' }
  { name: 'Source', type: 'string', description: 'Alert source: defender or graph.' }
  { name: 'AlertId', type: 'string', description: 'The alert id.' }
  { name: 'ProviderAlertId', type: 'string', description: 'The provider\'s own alert id.' }
  { name: 'IncidentId', type: 'string', description: 'The Defender incident id.' }
  { name: 'AlertName', type: 'string', description: 'The alert title.' }
  { name: 'AlertSeverity', type: 'string', description: 'Severity as the source wrote it.' }
  { name: 'Status', type: 'string', description: 'Status as the source wrote it.' }
  { name: 'Category', type: 'string', description: 'Category.' }
  { name: 'Classification', type: 'string', description: 'Classification.' }
  { name: 'Determination', type: 'string', description: 'Determination.' }
  { name: 'StartTime', type: 'datetime', description: 'First event time.' }
  { name: 'EndTime', type: 'datetime', description: 'Last event time.' }
  { name: 'CompromisedEntity', type: 'string', description: 'The device (computerDnsName).' }
  { name: 'LastUpdateTimeExact', type: 'string', description: 'lastUpdateTime exactly as the source wrote it (up to 7 fractional digits).' }
  { name: 'DeliveryKey', type: 'string', description: 'Idempotency key {tenantId}:{source}:{alertId}:{lastUpdateTimeExact}.' }
  { name: 'RawAlert', type: 'dynamic', description: 'The alert JSON, when it is at most 60 KB.' }
  { name: 'RawTruncated', type: 'boolean', description: 'True when RawAlert was omitted for size.' }
  { name: 'EvidenceCount', type: 'int', description: 'Number of evidence entries of the alert.' }
  { name: 'CollectorUrl', type: 'string', description: 'The collector\'s GET /api/tenants/{tenantId}/alerts/{alertId} for the whole alert.' }
]

// Built-in role definition ids (Microsoft Learn, "Azure built-in roles").
var roles = {
  // Logs Ingestion API: the caller needs it on the data collection rule.
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource table 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = {
  parent: workspace
  name: tableName
  properties: {
    plan: 'Analytics'
    schema: {
      name: tableName
      columns: [for c in columns: {
        name: c.name
        type: c.type == 'datetime' ? 'dateTime' : c.type
        description: c.description
      }]
    }
  }
}

resource dcr 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: dataCollectionRuleName
  location: location
  tags: tags
  kind: 'Direct'
  properties: {
    description: 'MSSP Defender collector: alerts into ${tableName}'
    streamDeclarations: {
      '${streamName}': {
        columns: [for c in columns: {
          name: c.name
          type: c.type
        }]
      }
    }
    destinations: {
      logAnalytics: [
        {
          name: 'workspace'
          workspaceResourceId: workspace.id
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          streamName
        ]
        destinations: [
          'workspace'
        ]
        transformKql: 'source'
        outputStream: streamName
      }
    ]
  }
  // The output stream must exist before the rule can point at it.
  dependsOn: [
    table
  ]
}

resource identityIngestionRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dcr.id, identityPrincipalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher))
  scope: dcr
  properties: {
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

output logsIngestionEndpoint string = dcr.properties.endpoints.logsIngestion
output immutableId string = dcr.properties.immutableId
output streamName string = streamName
output dataCollectionRuleId string = dcr.id
output tableName string = tableName
