// Azure Monitor log search alert rules over the app's Application Insights traces, and one
// over the Log Analytics workspace itself.
//
// They depend on these exact log lines (the `message` column of the `traces` table), which
// the app writes with context.log / context.warn:
//   tenant.state tenantId=<guid> status=<status>          every timer run, per tenant that is
//                                                          neither active nor offboarded
//                                                          (shared/collection/queue.ts)
//   tenant.status tenantId=<guid> status=<status> ...     when a tenant's status changes
//                                                          (shared/collection/engine.ts,
//                                                          shared/onboarding/consent.ts)
//   pull.succeeded tenantId=<guid> alerts=<n> watermark=<iso>
//   pull.failed tenantId=<guid> code=<code>
//   app.credential.expiring days=<n>                      once a day while the client secret
//                                                          has < 30 days left
//                                                          (shared/platform/credential-expiry.ts)
// Changing those messages in the app silently breaks these rules: keep both in step
// (docs/deploy.md, section "Alert rules"; test/infra.test.ts runs the rules' patterns over
// the lines the app really writes).

@description('Resource id of the Application Insights component the rules query.')
param applicationInsightsId string

@description('Resource id of the Log Analytics workspace (for the daily-cap rule).')
param logAnalyticsId string

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

// (1) A tenant needs re-consent: its refresh token no longer works (consent revoked, app
// removed, or a Conditional Access / AADSTS error) and an admin of that tenant must consent
// again. The timer logs "tenant.state" for every tenant that is neither active nor
// offboarded on each run, and status changes log "tenant.status"; the rule takes each
// tenant's latest such line of the last 30 minutes, so it stays fired exactly while the
// tenant is reconsent-required and resolves (autoMitigate) once it consents again
// ("tenant.status ... status=active") or is offboarded. The window must be longer than the
// PULL_SCHEDULE interval (default five minutes).
var reconsentQuery = '''
traces
| where timestamp > ago(30m)
| where message startswith "tenant.state " or message startswith "tenant.status "
| extend tenantId = extract(@"tenantId=([0-9A-Fa-f-]{36})", 1, message)
| extend status = extract(@" status=([A-Za-z-]+)", 1, message)
| where isnotempty(tenantId) and isnotempty(status)
| summarize arg_max(timestamp, status) by tenantId
| where status == "reconsent-required"
| project tenantId, status, lastSeen = timestamp
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

resource reconsentRule 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-tenant-reconsent-required'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'MSSP collector: tenant needs re-consent'
    description: 'A customer tenant is reconsent-required (its latest "tenant.state" / "tenant.status" line of the last 30 minutes says status=reconsent-required). Send that tenant a new consent link; the alert resolves once it consents again.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT30M'
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

// (3) The workspace reached its daily cap (logDailyCapGb): data collection stopped until
// the cap resets, and until then rules (1), (2) and (4) see no new lines. Azure writes an
// "OverQuota" record to the workspace's operation log; the query matches on that detail
// only, because the Operation column's wording differs between workspaces.
var dailyCapQuery = '''
_LogOperation
| where Detail contains "OverQuota"
| project TimeGenerated, Operation, Detail
'''

resource dailyCapRule 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-log-daily-cap-reached'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'MSSP collector: log data collection stopped at the daily cap'
    description: 'The Log Analytics workspace reached its daily cap. Until the cap resets, no traces arrive and the other alert rules are blind. Raise logDailyCapGb (LOG_DAILY_CAP_GB) or find what logs so much (docs/deploy.md).'
    severity: 1
    enabled: true
    scopes: [
      logAnalyticsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: dailyCapQuery
          timeAggregation: 'Count'
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

// (4) The MSSP app's client secret runs out within 30 days: the timer logs
// "app.credential.expiring days=<n>" once a day while it does. The query looks back 26
// hours so the daily line is never missed; the alert resolves a day after rotation
// (register-app.sh --rotate). Nothing fires when the app has no client secret.
var credentialQuery = '''
traces
| where timestamp > ago(26h)
| where message startswith "app.credential.expiring "
| extend days = toint(extract(@"days=(-?[0-9]+)", 1, message))
| summarize arg_max(timestamp, days)
| where isnotnull(days)
'''

resource credentialRule 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-client-secret-expiring'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'MSSP collector: client secret expires within 30 days'
    description: 'The client secret of the MSSP app registration (Key Vault secret, expires attribute) runs out soon (log line "app.credential.expiring days=<n>"). Rotate it: infra/scripts/register-app.sh --rotate.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'P1D'
    overrideQueryTimeRange: 'P2D'
    autoMitigate: true
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: credentialQuery
          timeAggregation: 'Count'
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

// (5) The reconciliation sweep of a tenant has not completed a pass for 6 hours while it
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
output dailyCapRuleName string = dailyCapRule.name
output credentialRuleName string = credentialRule.name
output sweepStaleRuleName string = sweepStaleRule.name
output actionGroupId string = hasEmail ? resourceId('Microsoft.Insights/actionGroups', actionGroupName) : ''
