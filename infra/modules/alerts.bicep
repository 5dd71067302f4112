// Azure Monitor log search alert rules over the app's Application Insights traces.
//
// They depend on these exact log lines (the `message` column of the `traces` table),
// which the app writes with context.log / context.warn (shared/collection/engine.ts, shared/onboarding/consent.ts):
//   tenant.status tenantId=<guid> status=reconsent-required code=<AADSTS code>
//   pull.succeeded tenantId=<guid> alerts=<n> watermark=<iso>
//   pull.failed tenantId=<guid> code=<code>
// and, for the stale-pull rule, any other pull.* line plus
//   tenant.status tenantId=<guid> status=active | status=offboarded
// Changing those messages in the app silently breaks these rules: keep both in step
// (docs/deploy.md, section "Alert rules").

@description('Resource id of the Application Insights component the rules query.')
param applicationInsightsId string

@description('Azure region of the Application Insights component.')
param location string

@description('Tags applied to the rules and the action group.')
param tags object = {}

@description('Prefix for the rule names.')
param namePrefix string

@description('Name of the action group created when alertEmail is set.')
param actionGroupName string

@description('E-mail address notified when a rule fires. Empty: no action group (alerts still show in the portal).')
param alertEmail string = ''

@description('Minutes without a successful pull after which a tenant counts as stale.')
@minValue(15)
@maxValue(1440)
param stalePullThresholdMinutes int = 60

var hasEmail = !empty(alertEmail)
var actionGroupIds = hasEmail ? [resourceId('Microsoft.Insights/actionGroups', actionGroupName)] : []

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (hasEmail) {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'msspcollect'
    enabled: true
    emailReceivers: [
      {
        name: 'operations-email'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// (1) A tenant turned reconsent-required: its refresh token no longer works (consent
// revoked, app removed, or a Conditional Access / AADSTS error) and an admin of that
// tenant must consent again. One alert per tenant (and AADSTS code).
var reconsentQuery = '''
traces
| where message startswith "tenant.status "
| extend tenantId = extract(@"tenantId=([0-9A-Fa-f-]{36})", 1, message)
| extend status = extract(@" status=([A-Za-z-]+)", 1, message)
| extend code = extract(@" code=([^ ]+)", 1, message)
| where status == "reconsent-required" and isnotempty(tenantId)
| summarize occurrences = count(), lastSeen = max(timestamp) by tenantId, code
'''

// (2) No successful pull for a tenant within the threshold. A tenant counts when, in the
// last two days (the query time range), it logged a pull.* line (succeeded, failed,
// partial) or turned active (tenant.status ... status=active, after consent); one whose
// latest tenant.status line says offboarded is left out. A tenant that never succeeded
// counts from its first line. If the app stops running, every recently active tenant
// alerts.
var staleQueryTemplate = '''
let staleAfter = {{STALE_MINUTES}}m;
let events = traces
| where message startswith "pull." or message startswith "tenant.status "
| extend tenantId = extract(@"tenantId=([0-9A-Fa-f-]{36})", 1, message)
| extend status = extract(@" status=([A-Za-z-]+)", 1, message)
| where isnotempty(tenantId);
let offboarded = events
| where message startswith "tenant.status "
| summarize arg_max(timestamp, status) by tenantId
| where status == "offboarded"
| project tenantId;
events
| where message startswith "pull." or status == "active"
| where tenantId !in (offboarded)
| extend succeeded = message startswith "pull.succeeded "
| summarize lastSuccess = maxif(timestamp, succeeded), firstSeen = min(timestamp), lastEvent = max(timestamp), failedPulls = countif(message startswith "pull.failed ") by tenantId
| extend since = iff(isnull(lastSuccess) or lastSuccess < firstSeen, firstSeen, lastSuccess)
| where since < ago(staleAfter)
| extend minutesWithoutSuccess = round((now() - since) / 1m, 0)
'''
var staleQuery = replace(staleQueryTemplate, '{{STALE_MINUTES}}', string(stalePullThresholdMinutes))

// (3) The reconciliation sweep of a tenant has not completed a pass for 6 hours while it
// keeps running (sweep.paused / sweep.failed lines, or none at all after the first): late
// alerts of that tenant are no longer being caught. See docs/collection.md.
var sweepStaleQuery = '''
traces
| where message startswith "sweep."
| extend tenantId = extract(@"tenantId=([0-9A-Fa-f-]{36})", 1, message)
| where isnotempty(tenantId)
| summarize lastPass = maxif(timestamp, message startswith "sweep.succeeded "), firstSeen = min(timestamp), lastEvent = max(timestamp) by tenantId
| where lastEvent > ago(3h)
| extend since = iff(isnull(lastPass), firstSeen, lastPass)
| where since < ago(6h)
| extend hoursWithoutPass = round((now() - since) / 1h, 1)
'''

resource reconsentRule 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-tenant-reconsent-required'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'MSSP collector: tenant needs re-consent'
    description: 'A customer tenant turned reconsent-required (log line "tenant.status tenantId=<guid> status=reconsent-required code=<AADSTS code>"). Send that tenant a new consent link.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    // A new workspace may not have ingested any trace yet; the query is covered by
    // docs/deploy.md (run it with az monitor app-insights query).
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: reconsentQuery
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'tenantId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'code'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actionGroupIds
    }
  }
  dependsOn: [
    actionGroup
  ]
}

resource stalePullRule 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-tenant-pull-stale'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'MSSP collector: no successful pull for a tenant'
    description: 'No "pull.succeeded tenantId=<guid> ..." line for a tenant in the last ${stalePullThresholdMinutes} minutes (tenants with a pull.* or tenant.status active line in the last two days, not offboarded).'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    overrideQueryTimeRange: 'P2D'
    autoMitigate: true
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: staleQuery
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'tenantId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actionGroupIds
    }
  }
  dependsOn: [
    actionGroup
  ]
}

resource sweepStaleRule 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-tenant-sweep-stale'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'MSSP collector: reconciliation sweep stalled for a tenant'
    description: 'No "sweep.succeeded tenantId=<guid> ..." line for a tenant in 6 hours while its sweep keeps running: alerts Defender publishes late are not being caught. Check the tenant\'s status (skippedSlices, lastError) and its call budget.'
    severity: 3
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    autoMitigate: true
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: sweepStaleQuery
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'tenantId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actionGroupIds
    }
  }
  dependsOn: [
    actionGroup
  ]
}

output reconsentRuleName string = reconsentRule.name
output stalePullRuleName string = stalePullRule.name
output sweepStaleRuleName string = sweepStaleRule.name
output actionGroupId string = hasEmail ? resourceId('Microsoft.Insights/actionGroups', actionGroupName) : ''
