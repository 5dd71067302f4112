/**
 * Realistic, deterministic Microsoft Graph security `alerts_v2` objects
 * (`microsoft.graph.security.alert`) for tests, the sandbox and the benchmark.
 *
 * The property set, types and enum vocabularies follow Microsoft Graph's v1.0 reference
 * (microsoftgraph/microsoft-graph-docs-contrib, `resources/security-alert.md`,
 * `security-alertevidence.md` and the evidence pages); the values are ours. They vary the
 * way real alerts do: several service sources with their own id shapes, evolvable enum
 * members that only arrive with `Prefer: include-unknown-enum-members`, nulls, unicode,
 * timestamps with 1 to 7 fractional digits, and typed evidence (`@odata.type`) that can run
 * to megabytes.
 *
 * Id shapes per service source are modelled, not documented: Defender for Endpoint ids look
 * like the Defender API's (`da<.NET ticks>_<int32>`, and `ed…` for custom detections) and
 * equal their providerAlertId, the shape shown in Graph's own example; the other sources
 * use a two-letter prefix plus the provider's own id (`fa<guid>` for Office 365, and so on).
 *
 * Timestamps reuse the helpers of ./alerts.ts: 100-ns ticks since the Unix epoch.
 */
import {
  createRng,
  DOTNET_EPOCH_TICKS,
  formatTimestamp,
  parseTimestamp,
  R,
  type Rng,
  TICKS_PER_MS,
  toTicks,
} from "./alerts.js";

// ---------------------------------------------------------------------------
// Types.

export interface GraphUserAccount {
  accountName: string | null;
  domainName: string | null;
  userSid: string | null;
  azureAdUserId: string | null;
  userPrincipalName: string | null;
  displayName: string | null;
}

export interface GraphFileDetails {
  sha1: string | null;
  sha256: string | null;
  fileName: string | null;
  filePath: string | null;
  fileSize: number | null;
  filePublisher: string | null;
  signer: string | null;
  issuer: string | null;
}

export interface GraphEmailSender {
  emailAddress: string | null;
  displayName: string | null;
  domainName: string | null;
}

/** Properties every evidence kind inherits from `microsoft.graph.security.alertEvidence`. */
export interface GraphEvidenceBase {
  "@odata.type": string;
  createdDateTime: string;
  verdict: string;
  remediationStatus: string;
  remediationStatusDetails: string | null;
  roles: string[];
  detailedRoles: string[];
  tags: string[];
}

export interface DeviceEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.deviceEvidence";
  firstSeenDateTime: string | null;
  mdeDeviceId: string | null;
  azureAdDeviceId: string | null;
  deviceDnsName: string | null;
  osPlatform: string | null;
  /** Int64. */
  osBuild: number | null;
  version: string | null;
  healthStatus: string;
  riskScore: string;
  /** Int32. */
  rbacGroupId: number | null;
  rbacGroupName: string | null;
  onboardingStatus: string;
  defenderAvStatus: string;
  ipInterfaces: string[];
  loggedOnUsers: { accountName: string; domainName: string }[];
  vmMetadata: { vmId: string; cloudProvider: string; resourceId: string; subscriptionId: string } | null;
}

export interface FileEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.fileEvidence";
  detectionStatus: string | null;
  mdeDeviceId: string | null;
  fileDetails: GraphFileDetails;
}

export interface ProcessEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.processEvidence";
  processId: number | null;
  parentProcessId: number | null;
  processCommandLine: string | null;
  processCreationDateTime: string | null;
  parentProcessCreationDateTime: string | null;
  detectionStatus: string | null;
  mdeDeviceId: string | null;
  imageFile: GraphFileDetails | null;
  parentProcessImageFile: GraphFileDetails | null;
  userAccount: GraphUserAccount | null;
}

export interface UserEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.userEvidence";
  userAccount: GraphUserAccount;
}

export interface IpEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.ipEvidence";
  ipAddress: string;
  countryLetterCode: string | null;
}

export interface UrlEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.urlEvidence";
  url: string;
}

export interface MailboxEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.mailboxEvidence";
  displayName: string | null;
  primaryAddress: string | null;
  upn: string | null;
  userAccount: GraphUserAccount | null;
}

export interface CloudApplicationEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.cloudApplicationEvidence";
  /** Int64. */
  appId: number;
  displayName: string;
  /** Int64. */
  instanceId: number;
  instanceName: string | null;
  /** Int64. */
  saasAppId: number;
}

export interface AnalyzedMessageEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.analyzedMessageEvidence";
  networkMessageId: string;
  internetMessageId: string;
  subject: string | null;
  language: string | null;
  senderIp: string | null;
  recipientEmailAddress: string;
  antiSpamDirection: string;
  deliveryAction: string;
  deliveryLocation: string;
  urn: string | null;
  threats: string[];
  threatDetectionMethods: string[];
  urls: string[];
  urlCount: number;
  attachmentsCount: number;
  receivedDateTime: string;
  p1Sender: GraphEmailSender;
  p2Sender: GraphEmailSender;
}

export interface RegistryKeyEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.registryKeyEvidence";
  registryKey: string;
  registryHive: string;
}

export interface RegistryValueEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.registryValueEvidence";
  mdeDeviceId: string | null;
  registryKey: string;
  registryHive: string;
  registryValue: string | null;
  registryValueName: string | null;
  registryValueType: string | null;
}

export interface OauthApplicationEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.oauthApplicationEvidence";
  appId: string;
  displayName: string;
  objectId: string;
  publisher: string | null;
}

export interface SecurityGroupEvidence extends GraphEvidenceBase {
  "@odata.type": "#microsoft.graph.security.securityGroupEvidence";
  displayName: string;
  securityGroupId: string;
}

export type GraphEvidence =
  | DeviceEvidence
  | FileEvidence
  | ProcessEvidence
  | UserEvidence
  | IpEvidence
  | UrlEvidence
  | MailboxEvidence
  | CloudApplicationEvidence
  | AnalyzedMessageEvidence
  | RegistryKeyEvidence
  | RegistryValueEvidence
  | OauthApplicationEvidence
  | SecurityGroupEvidence;

export interface GraphAlertComment {
  comment: string;
  createdByDisplayName: string;
  createdDateTime: string;
}

export interface GraphAlert {
  "@odata.type": "#microsoft.graph.security.alert";
  id: string;
  providerAlertId: string;
  incidentId: string | null;
  status: string;
  severity: string;
  classification: string | null;
  determination: string | null;
  serviceSource: string;
  detectionSource: string;
  detectorId: string | null;
  tenantId: string;
  title: string;
  description: string;
  recommendedActions: string | null;
  category: string;
  assignedTo: string | null;
  alertWebUrl: string;
  incidentWebUrl: string | null;
  actorDisplayName: string | null;
  threatDisplayName: string | null;
  threatFamilyName: string | null;
  mitreTechniques: string[];
  createdDateTime: string;
  lastUpdateDateTime: string;
  resolvedDateTime: string | null;
  firstActivityDateTime: string | null;
  lastActivityDateTime: string | null;
  comments: GraphAlertComment[];
  evidence: GraphEvidence[];
  systemTags: string[];
  alertPolicyId: string | null;
  additionalData: Record<string, unknown>;
}

/** Keys of a generated alert, in the order they are written (the order of Graph's JSON representation). */
export const GRAPH_ALERT_KEYS: readonly (keyof GraphAlert)[] = [
  "@odata.type",
  "id",
  "providerAlertId",
  "incidentId",
  "status",
  "severity",
  "classification",
  "determination",
  "serviceSource",
  "detectionSource",
  "detectorId",
  "tenantId",
  "title",
  "description",
  "recommendedActions",
  "category",
  "assignedTo",
  "alertWebUrl",
  "incidentWebUrl",
  "actorDisplayName",
  "threatDisplayName",
  "threatFamilyName",
  "mitreTechniques",
  "createdDateTime",
  "lastUpdateDateTime",
  "resolvedDateTime",
  "firstActivityDateTime",
  "lastActivityDateTime",
  "comments",
  "evidence",
  "systemTags",
  "alertPolicyId",
  "additionalData",
];

/** Keys every evidence entry starts with, after which come its kind's own. */
export const GRAPH_EVIDENCE_BASE_KEYS: readonly (keyof GraphEvidenceBase)[] = [
  "@odata.type",
  "createdDateTime",
  "verdict",
  "remediationStatus",
  "remediationStatusDetails",
  "roles",
  "detailedRoles",
  "tags",
];

// ---------------------------------------------------------------------------
// Vocabulary (documented enum members, in declaration order).

export const GRAPH_ALERT_STATUSES = ["unknown", "new", "inProgress", "resolved", "unknownFutureValue"] as const;
export const GRAPH_ALERT_SEVERITIES = ["unknown", "informational", "low", "medium", "high", "unknownFutureValue"] as const;
export const GRAPH_ALERT_CLASSIFICATIONS = [
  "unknown",
  "falsePositive",
  "truePositive",
  "informationalExpectedActivity",
  "unknownFutureValue",
] as const;
export const GRAPH_ALERT_DETERMINATIONS = [
  "unknown",
  "apt",
  "malware",
  "securityPersonnel",
  "securityTesting",
  "unwantedSoftware",
  "other",
  "multiStagedAttack",
  "compromisedUser",
  "phishing",
  "maliciousUserActivity",
  "clean",
  "insufficientData",
  "confirmedUserActivity",
  "lineOfBusinessApplication",
  "unknownFutureValue",
] as const;
/** serviceSource members; those after `unknownFutureValue` need `Prefer: include-unknown-enum-members`. */
export const GRAPH_SERVICE_SOURCES = [
  "unknown",
  "microsoftDefenderForEndpoint",
  "microsoftDefenderForIdentity",
  "microsoftDefenderForCloudApps",
  "microsoftDefenderForOffice365",
  "microsoft365Defender",
  "azureAdIdentityProtection",
  "microsoftAppGovernance",
  "dataLossPrevention",
  "unknownFutureValue",
  "microsoftDefenderForCloud",
  "microsoftSentinel",
  "microsoftInsiderRiskManagement",
  "microsoftThreatIntelligence",
] as const;
/** detectionSource members; those after `unknownFutureValue` need `Prefer: include-unknown-enum-members`. */
export const GRAPH_DETECTION_SOURCES = [
  "unknown",
  "microsoftDefenderForEndpoint",
  "antivirus",
  "smartScreen",
  "customTi",
  "microsoftDefenderForOffice365",
  "automatedInvestigation",
  "microsoftThreatExperts",
  "customDetection",
  "microsoftDefenderForIdentity",
  "cloudAppSecurity",
  "microsoft365Defender",
  "azureAdIdentityProtection",
  "manual",
  "microsoftDataLossPrevention",
  "appGovernancePolicy",
  "appGovernanceDetection",
  "unknownFutureValue",
  "microsoftDefenderForCloud",
  "microsoftDefenderForIoT",
  "microsoftDefenderForServers",
  "microsoftDefenderForStorage",
  "microsoftDefenderForDNS",
  "microsoftDefenderForDatabases",
  "microsoftDefenderForContainers",
  "microsoftDefenderForNetwork",
  "microsoftDefenderForAppService",
  "microsoftDefenderForKeyVault",
  "microsoftDefenderForResourceManager",
  "microsoftDefenderForApiManagement",
  "microsoftSentinel",
  "microsoftInsiderRiskManagement",
] as const;

/**
 * The evolvable enums of an alert's top-level properties and the members a client knows
 * without opting in: everything declared before the `unknownFutureValue` sentinel. Any
 * other value is sent as `unknownFutureValue` unless the request carries
 * `Prefer: include-unknown-enum-members`.
 */
export const EVOLVABLE_ENUM_KNOWN_MEMBERS: Readonly<Record<string, ReadonlySet<string>>> = {
  status: membersBeforeSentinel(GRAPH_ALERT_STATUSES),
  severity: membersBeforeSentinel(GRAPH_ALERT_SEVERITIES),
  classification: membersBeforeSentinel(GRAPH_ALERT_CLASSIFICATIONS),
  determination: membersBeforeSentinel(GRAPH_ALERT_DETERMINATIONS),
  serviceSource: membersBeforeSentinel(GRAPH_SERVICE_SOURCES),
  detectionSource: membersBeforeSentinel(GRAPH_DETECTION_SOURCES),
};

function membersBeforeSentinel(members: readonly string[]): ReadonlySet<string> {
  return new Set(members.slice(0, members.indexOf("unknownFutureValue")));
}

/**
 * The alert as a client without `Prefer: include-unknown-enum-members` sees it: evolvable
 * enum values newer than the sentinel become `unknownFutureValue`. Returns the same object
 * when nothing changes.
 */
export function hideUnknownEnumMembers(alert: GraphAlert): GraphAlert {
  let out: GraphAlert | null = null;
  for (const [key, known] of Object.entries(EVOLVABLE_ENUM_KNOWN_MEMBERS)) {
    const value = (alert as unknown as Record<string, unknown>)[key];
    if (typeof value === "string" && value !== "unknownFutureValue" && !known.has(value)) {
      out ??= { ...alert };
      (out as unknown as Record<string, unknown>)[key] = "unknownFutureValue";
    }
  }
  return out ?? alert;
}

export type GraphEvidenceKind =
  | "device"
  | "file"
  | "process"
  | "user"
  | "ip"
  | "url"
  | "mailbox"
  | "cloudApplication"
  | "analyzedMessage"
  | "registryKey"
  | "registryValue"
  | "oauthApplication"
  | "securityGroup";

/** `@odata.type` of each evidence kind. */
export const GRAPH_EVIDENCE_TYPES: Readonly<Record<GraphEvidenceKind, string>> = {
  device: "#microsoft.graph.security.deviceEvidence",
  file: "#microsoft.graph.security.fileEvidence",
  process: "#microsoft.graph.security.processEvidence",
  user: "#microsoft.graph.security.userEvidence",
  ip: "#microsoft.graph.security.ipEvidence",
  url: "#microsoft.graph.security.urlEvidence",
  mailbox: "#microsoft.graph.security.mailboxEvidence",
  cloudApplication: "#microsoft.graph.security.cloudApplicationEvidence",
  analyzedMessage: "#microsoft.graph.security.analyzedMessageEvidence",
  registryKey: "#microsoft.graph.security.registryKeyEvidence",
  registryValue: "#microsoft.graph.security.registryValueEvidence",
  oauthApplication: "#microsoft.graph.security.oauthApplicationEvidence",
  securityGroup: "#microsoft.graph.security.securityGroupEvidence",
};

type Weighted<T> = readonly (readonly [T, number])[];

interface Template {
  title: string;
  category: string;
  mitre: readonly string[];
  description: string;
}

interface Profile {
  weight: number;
  /** Builds (id, providerAlertId) from the creation time. */
  ids: (r: R, created: bigint, detectionSource: string) => [string, string];
  detectionSources: Weighted<string>;
  templates: readonly Template[];
  evidence: Weighted<GraphEvidenceKind>;
  /** Share of alerts carrying an alertPolicyId. */
  policy: number;
}

const mdeId = (prefix: string) => (r: R, created: bigint) => {
  const id = `${prefix}${(DOTNET_EPOCH_TICKS + created).toString()}_${r.int32()}`;
  return [id, id] as [string, string];
};
const prefixed = (prefix: string, provider: (r: R) => string) => (r: R) => {
  const providerId = provider(r);
  return [`${prefix}${providerId}`, providerId] as [string, string];
};

const ENDPOINT_TEMPLATES: readonly Template[] = [
  {
    title: "Suspicious PowerShell download cradle",
    category: "Execution",
    mitre: ["T1059.001", "T1105"],
    description: "PowerShell fetched and ran a script from the internet in one command line. Review the parent process and the downloaded content.",
  },
  {
    title: "Credential dumping from LSASS memory",
    category: "CredentialAccess",
    mitre: ["T1003.001"],
    description: "A process read the memory of lsass.exe in a way that credential theft tools do.",
  },
  {
    title: "Ransomware-like mass file encryption",
    category: "Ransomware",
    mitre: ["T1486", "T1490"],
    description: "Hundreds of files were rewritten with high entropy and renamed within seconds.\nShadow copies were deleted shortly before.",
  },
  {
    title: "An active 'Lumma' stealer was blocked",
    category: "Malware",
    mitre: [],
    description: "Microsoft Defender Antivirus blocked a known information stealer.",
  },
  {
    title: "Verdächtiger Start von „rundll32.exe“ aus dem Temp-Ordner",
    category: "DefenseEvasion",
    mitre: ["T1218.011"],
    description: "Benutzerdefinierte Erkennung: rundll32 lud eine DLL aus %TEMP% – bitte prüfen.",
  },
  {
    title: "不審なスケジュール タスクの登録",
    category: "Persistence",
    mitre: ["T1053.005"],
    description: "ユーザーが書き込めるフォルダーのスクリプトを実行するタスクが作成されました。",
  },
];
const OFFICE_TEMPLATES: readonly Template[] = [
  {
    title: "Email messages containing malicious URL removed after delivery",
    category: "InitialAccess",
    mitre: ["T1566.002"],
    description: "Messages with a URL later found malicious were moved out of mailboxes by zero-hour auto purge.",
  },
  {
    title: "A potentially malicious URL click was detected",
    category: "InitialAccess",
    mitre: ["T1204.001"],
    description: "A user clicked a link that Safe Links flagged after the click.",
  },
  {
    title: "Hameçonnage : message usurpant l’identité d’un dirigeant",
    category: "InitialAccess",
    mitre: ["T1566.001"],
    description: "Un message imitant la direction financière a été distribué à 12 destinataires.",
  },
];
const IDENTITY_TEMPLATES: readonly Template[] = [
  {
    title: "Suspected DCSync attack (replication of directory services)",
    category: "CredentialAccess",
    mitre: ["T1003.006"],
    description: "A non-domain-controller requested replication of directory secrets.",
  },
  {
    title: "Suspected brute-force attack (Kerberos, NTLM)",
    category: "CredentialAccess",
    mitre: ["T1110.001", "T1110.003"],
    description: "Many failed authentications for several accounts came from one device.",
  },
  {
    title: "Разведка учётных записей через LDAP",
    category: "Discovery",
    mitre: ["T1087.002"],
    description: "С устройства выполнено необычно много запросов LDAP к привилегированным группам.",
  },
];
const CLOUD_APPS_TEMPLATES: readonly Template[] = [
  {
    title: "Impossible travel activity",
    category: "InitialAccess",
    mitre: ["T1078.004"],
    description: "The same user signed in from two countries farther apart than travel allows in the time between.",
  },
  {
    title: "Mass download by a single user",
    category: "Exfiltration",
    mitre: ["T1530"],
    description: "A user downloaded an unusual number of files from SharePoint in a short time.",
  },
];
const ENTRA_TEMPLATES: readonly Template[] = [
  {
    title: "Unfamiliar sign-in properties",
    category: "InitialAccess",
    mitre: ["T1078"],
    description: "A sign-in came from a location, device and browser this user has not used before.",
  },
  { title: "Anonymous IP address", category: "InitialAccess", mitre: ["T1090.003"], description: "A sign-in came through an anonymizing network." },
  { title: "Leaked credentials", category: "CredentialAccess", mitre: ["T1589.001"], description: "The user's valid credentials were found in a public leak." },
];
const DLP_TEMPLATES: readonly Template[] = [
  {
    title: "DLP policy match for document 'Q3-Gehälter.xlsx' in SharePoint",
    category: "Exfiltration",
    mitre: [],
    description: "A document with 214 instances of sensitive information was shared with an external address.",
  },
  {
    title: "Sensitive data sent by email to a personal address",
    category: "Exfiltration",
    mitre: ["T1048.003"],
    description: "An email carrying credit card numbers was sent outside the organization.",
  },
];
const XDR_TEMPLATES: readonly Template[] = [
  {
    title: "Suspicious sequence of exploration activities",
    category: "Discovery",
    mitre: ["T1087", "T1082", "T1016"],
    description: "Several discovery commands ran in a short time from one session.",
  },
  {
    title: "🔥 Custom detection: canary file touched on a file server",
    category: "Impact",
    mitre: ["T1486"],
    description: "Canary file \\\\fs01\\finance\\~$canary.xlsx was modified by an unsigned process 🚨.",
  },
];
const APP_GOVERNANCE_TEMPLATES: readonly Template[] = [
  {
    title: "App with unusual mail read activity",
    category: "Collection",
    mitre: ["T1114.002"],
    description: "An OAuth app read far more mail through Graph than its history suggests.",
  },
];
const CLOUD_TEMPLATES: readonly Template[] = [
  {
    title: "Access from a suspicious IP address to a storage account",
    category: "InitialAccess",
    mitre: ["T1078.004"],
    description: "A storage account was accessed from an address associated with malicious activity.",
  },
  {
    title: "Suspicious process executed on a virtual machine",
    category: "Execution",
    mitre: ["T1059"],
    description: "A virtual machine ran a process commonly used by crypto miners.",
  },
];
const SENTINEL_TEMPLATES: readonly Template[] = [
  {
    title: "Brute force attack against the Azure portal",
    category: "CredentialAccess",
    mitre: ["T1110"],
    description: "Scheduled analytics rule: more than 20 failed Azure portal sign-ins from one address.",
  },
];
const IRM_TEMPLATES: readonly Template[] = [
  {
    title: "Data theft by departing user",
    category: "Exfiltration",
    mitre: [],
    description: "A user with an upcoming departure date copied sensitive files to a USB device.",
  },
];
const TI_TEMPLATES: readonly Template[] = [
  {
    title: "Connection to infrastructure of a tracked threat actor",
    category: "CommandAndControl",
    mitre: ["T1071.001"],
    description: "A device contacted a domain attributed to a tracked threat actor.",
  },
];

const PROFILES: Readonly<Record<string, Profile>> = {
  microsoftDefenderForEndpoint: {
    weight: 40,
    ids: (r, created, detectionSource) => mdeId(detectionSource === "customDetection" ? "ed" : "da")(r, created),
    detectionSources: [
      ["microsoftDefenderForEndpoint", 50],
      ["antivirus", 25],
      ["customDetection", 8],
      ["automatedInvestigation", 5],
      ["customTi", 4],
      ["smartScreen", 3],
    ],
    templates: ENDPOINT_TEMPLATES,
    evidence: [
      ["device", 25],
      ["process", 30],
      ["file", 20],
      ["user", 10],
      ["ip", 5],
      ["url", 4],
      ["registryKey", 3],
      ["registryValue", 3],
    ],
    policy: 0,
  },
  microsoftDefenderForOffice365: {
    weight: 15,
    ids: prefixed("fa", (r) => r.uuid()),
    detectionSources: [["microsoftDefenderForOffice365", 1]],
    templates: OFFICE_TEMPLATES,
    evidence: [
      ["analyzedMessage", 35],
      ["mailbox", 25],
      ["url", 20],
      ["user", 10],
      ["ip", 10],
    ],
    policy: 0.9,
  },
  microsoftDefenderForIdentity: {
    weight: 8,
    ids: prefixed("aa", (r) => r.uuid()),
    detectionSources: [["microsoftDefenderForIdentity", 1]],
    templates: IDENTITY_TEMPLATES,
    evidence: [
      ["user", 40],
      ["device", 30],
      ["ip", 20],
      ["securityGroup", 10],
    ],
    policy: 0,
  },
  microsoftDefenderForCloudApps: {
    weight: 8,
    ids: prefixed("ca", (r) => r.hex(24)),
    detectionSources: [["cloudAppSecurity", 1]],
    templates: CLOUD_APPS_TEMPLATES,
    evidence: [
      ["cloudApplication", 35],
      ["user", 35],
      ["ip", 30],
    ],
    policy: 0.5,
  },
  azureAdIdentityProtection: {
    weight: 8,
    ids: prefixed("ad", (r) => r.hex(40)),
    detectionSources: [["azureAdIdentityProtection", 1]],
    templates: ENTRA_TEMPLATES,
    evidence: [
      ["user", 60],
      ["ip", 40],
    ],
    policy: 0,
  },
  dataLossPrevention: {
    weight: 6,
    ids: prefixed("dl", (r) => r.uuid()),
    detectionSources: [["microsoftDataLossPrevention", 1]],
    templates: DLP_TEMPLATES,
    evidence: [
      ["user", 40],
      ["file", 25],
      ["mailbox", 20],
      ["url", 15],
    ],
    policy: 1,
  },
  microsoft365Defender: {
    weight: 4,
    ids: prefixed("ar", (r) => `${r.int(100_000_000, 999_999_999)}-${r.hex(8)}`),
    detectionSources: [
      ["microsoft365Defender", 3],
      ["customDetection", 2],
      ["manual", 1],
    ],
    templates: XDR_TEMPLATES,
    evidence: [
      ["device", 25],
      ["user", 25],
      ["process", 20],
      ["ip", 15],
      ["file", 15],
    ],
    policy: 0,
  },
  microsoftAppGovernance: {
    weight: 2,
    ids: prefixed("ma", (r) => r.uuid()),
    detectionSources: [
      ["appGovernanceDetection", 2],
      ["appGovernancePolicy", 1],
    ],
    templates: APP_GOVERNANCE_TEMPLATES,
    evidence: [
      ["oauthApplication", 60],
      ["user", 40],
    ],
    policy: 0.5,
  },
  microsoftDefenderForCloud: {
    weight: 3,
    ids: prefixed("dc", (r) => `${r.int(1_000_000_000, 2_147_483_647)}_${r.uuid()}`),
    detectionSources: [
      ["microsoftDefenderForServers", 2],
      ["microsoftDefenderForStorage", 1],
      ["microsoftDefenderForKeyVault", 1],
    ],
    templates: CLOUD_TEMPLATES,
    evidence: [
      ["device", 40],
      ["ip", 40],
      ["process", 20],
    ],
    policy: 0,
  },
  microsoftSentinel: {
    weight: 3,
    ids: prefixed("sn", (r) => r.uuid()),
    detectionSources: [["microsoftSentinel", 1]],
    templates: SENTINEL_TEMPLATES,
    evidence: [
      ["ip", 50],
      ["user", 50],
    ],
    policy: 1,
  },
  microsoftInsiderRiskManagement: {
    weight: 2,
    ids: prefixed("ir", (r) => r.uuid()),
    detectionSources: [["microsoftInsiderRiskManagement", 1]],
    templates: IRM_TEMPLATES,
    evidence: [
      ["user", 60],
      ["file", 40],
    ],
    policy: 1,
  },
  microsoftThreatIntelligence: {
    weight: 1,
    ids: prefixed("ti", (r) => r.uuid()),
    detectionSources: [["microsoftThreatExperts", 1]],
    templates: TI_TEMPLATES,
    evidence: [
      ["url", 40],
      ["ip", 30],
      ["device", 30],
    ],
    policy: 0,
  },
};
const SERVICE_WEIGHTS: Weighted<string> = Object.entries(PROFILES).map(([name, p]) => [name, p.weight] as const);

const STATUSES: Weighted<string> = [
  ["new", 45],
  ["inProgress", 25],
  ["resolved", 28],
  ["unknown", 2],
];
const SEVERITIES: Weighted<string> = [
  ["informational", 15],
  ["low", 35],
  ["medium", 33],
  ["high", 15],
  ["unknown", 2],
];
const RESOLVED_CLASSIFICATIONS = ["truePositive", "falsePositive", "informationalExpectedActivity"] as const;
const DETERMINATIONS_BY_CLASSIFICATION: Readonly<Record<string, readonly string[]>> = {
  truePositive: ["malware", "phishing", "multiStagedAttack", "maliciousUserActivity", "compromisedUser", "unwantedSoftware", "apt", "other"],
  falsePositive: ["clean", "insufficientData", "other"],
  informationalExpectedActivity: ["securityTesting", "lineOfBusinessApplication", "confirmedUserActivity", "securityPersonnel"],
};
const THREATS = [
  ["Lumma", "Trojan:Win32/LummaStealer.A!MTB"],
  ["Wacatac", "Trojan:Win32/Wacatac.B!ml"],
  ["CobaltStrike", "Backdoor:Win64/CobaltStrike.NP!dha"],
  ["Qakbot", "Trojan:Win32/Qakbot!ml"],
  ["Mimikatz", "HackTool:Win32/Mimikatz.D"],
] as const;
const ACTORS = ["Storm-0501", "Octo Tempest", "Midnight Blizzard", "Manatee Tempest", "Strontium – legacy name"];
const ANALYSTS = ["secop@contoso.com", "analyst@fabrikam.onmicrosoft.com", "soc.tier2@mssp.example", "ñandú@contoso.com", "Automation"];
const COMMENT_AUTHORS = ["Jane Analyst", "Automation", "Søren Ødegård", "李明", "soc.tier2@mssp.example"];
const COMMENTS = [
  "Looked at the timeline; the parent process is the backup agent.",
  "Escalated to the customer – waiting for approval to isolate.",
  'False positive: "VeeamAgent.exe" (ticket #4711).',
  "已确认为授权的渗透测试。",
  "Line one\nline two\twith a tab and a backslash \\",
  "🚩 device isolated",
];
const USERS = [
  ["jdoe", "CONTOSO", "John Doe"],
  ["svc_backup", "CONTOSO", "Backup service"],
  ["josé.garcía", "FABRIKAM", "José García"],
  ["zoë.müller", "MÜNCHEN-AG", "Zoë Müller"],
  ["yamada.taro", "CONTOSO", "山田 太郎"],
  ["o'brien", "NORTHWIND", "Aoife O'Brien"],
  ["Administrator", "CONTOSO", null],
] as const;
const UPN_DOMAINS = ["contoso.com", "fabrikam.onmicrosoft.com", "northwind.example", "münchen-ag.example"];
const DNS_SUFFIXES = ["corp.contoso.com", "fabrikam.local", "eu.northwind.example"];
const RBAC_GROUPS = ["UnassignedGroup", "Servers", "Workstations", "Tier 0 – Domain Controllers", "Ünternehmen-Laptops"];
const SYSTEM_TAGS = ["Defender Experts", "Automatic attack disruption", "Tier 0 asset", "Red team"];
const PROCESSES = [
  ["powershell.exe", "C:\\Windows\\System32\\WindowsPowerShell\\v1.0", "Microsoft Corporation"],
  ["rundll32.exe", "C:\\Windows\\System32", "Microsoft Corporation"],
  ["cmd.exe", "C:\\Windows\\System32", "Microsoft Corporation"],
  ["mshta.exe", "C:\\Windows\\SysWOW64", "Microsoft Corporation"],
  ["WINWORD.EXE", "C:\\Program Files\\Microsoft Office\\root\\Office16", "Microsoft Corporation"],
  ["setup_x64.exe", "C:\\Users\\Public\\Downloads", null],
] as const;
const CLOUD_APPS = [
  [20893, "Microsoft SharePoint Online"],
  [11161, "Microsoft Office 365"],
  [15600, "Microsoft OneDrive for Business"],
  [28375, "Microsoft Teams"],
  [10489, "Box"],
] as const;
const COUNTRIES = ["US", "DE", "NL", "JP", "BR", "RU", "NG", null];

// ---------------------------------------------------------------------------
// Generator.

/** Options that steer generation; every other key overrides the alert property of that name. */
export interface GraphAlertGenerationOptions {
  /** When the alert was last updated; a string is used verbatim. */
  lastUpdateDateTime: Date | string;
  /** Seed for this alert alone; without seed or rng a module-wide seeded PRNG is used. */
  seed?: number | string;
  rng?: Rng;
  /** Number of evidence entries (default: random 0..6). */
  evidenceCount?: number;
  /** Fractional digits of lastUpdateDateTime when it is a Date (default: random, mostly 7). */
  fractionDigits?: number;
}

/**
 * Options for makeGraphAlert. `serviceSource` (any string, also one newer than the known
 * list) picks the service profile: id shape, detection sources, titles and evidence kinds.
 * An `id` given without `providerAlertId` is used for both. `alertWebUrl` and
 * `incidentWebUrl` follow the final id, incidentId and tenantId unless given.
 */
export type MakeGraphAlertOptions = GraphAlertGenerationOptions & Partial<Omit<GraphAlert, "lastUpdateDateTime">>;

const OPTION_KEYS = new Set(["lastUpdateDateTime", "seed", "rng", "evidenceCount", "fractionDigits"]);

let moduleRng: Rng = createRng(0x6a7a);

/** Restarts the module-wide PRNG used when makeGraphAlert gets neither seed nor rng. */
export function resetGraphDefaultRng(seed: number | string = 0x6a7a): void {
  moduleRng = createRng(seed);
}

/**
 * One realistic alerts_v2 alert. With a Date lastUpdateDateTime, the string is that
 * millisecond plus random sub-millisecond digits, truncated to `fractionDigits` (within
 * 1 ms of the Date, and never later than it when fractionDigits <= 3).
 */
export function makeGraphAlert(opts: MakeGraphAlertOptions): GraphAlert {
  const r = new R(opts.rng ?? (opts.seed !== undefined ? createRng(opts.seed) : moduleRng));

  let updated: bigint;
  let lastUpdateDateTime: string;
  if (typeof opts.lastUpdateDateTime === "string") {
    lastUpdateDateTime = opts.lastUpdateDateTime;
    updated = toTicks(lastUpdateDateTime);
  } else {
    updated = toTicks(opts.lastUpdateDateTime) + BigInt(r.int(0, 9999));
    lastUpdateDateTime = formatTimestamp(updated, opts.fractionDigits ?? r.digits());
  }

  const serviceSource = opts.serviceSource ?? r.weighted(SERVICE_WEIGHTS);
  const profile = PROFILES[serviceSource] ?? (PROFILES.microsoft365Defender as Profile);
  const sec = 10_000_000n;
  const created = r.chance(0.6)
    ? updated - BigInt(r.int(0, 3000)) * TICKS_PER_MS - BigInt(r.int(0, 9999))
    : updated - BigInt(r.int(60, 14 * 24 * 3600)) * sec - BigInt(r.int(0, 9_999_999));
  const firstActivity = created - BigInt(r.int(1, 3600)) * sec - BigInt(r.int(0, 9_999_999));
  const lastActivity = firstActivity + BigInt(Math.floor(r.next() * Number(created - firstActivity)));
  const between = () => created + BigInt(Math.floor(r.next() * Number(updated - created + 1n)));

  const detectionSource = r.weighted(profile.detectionSources);
  const [generatedId, generatedProviderId] = profile.ids(r, created, detectionSource);
  const template = r.pick(profile.templates);
  const status = r.weighted(STATUSES);
  const resolved = status === "resolved";
  let classification: string | null = "unknown";
  let determination: string | null = "unknown";
  if (resolved || r.chance(0.1)) {
    classification = r.pick(RESOLVED_CLASSIFICATIONS);
    determination = r.chance(0.85) ? r.pick(DETERMINATIONS_BY_CLASSIFICATION[classification] as readonly string[]) : "unknown";
  } else if (r.chance(0.05)) {
    classification = null;
    determination = null;
  }
  const threat = template.category === "Malware" || detectionSource === "antivirus" ? r.pick(THREATS) : null;
  const tenantId = opts.tenantId ?? r.uuid();
  const incidentId = r.chance(0.97) ? String(r.int(1, 999_999)) : null;

  const comments: GraphAlertComment[] = [];
  const commentCount = r.weighted([
    [0, 6],
    [1, 3],
    [2, 1],
    [3, 1],
  ] as const);
  for (let i = 0; i < commentCount; i++) {
    comments.push({ comment: r.pick(COMMENTS), createdByDisplayName: r.pick(COMMENT_AUTHORS), createdDateTime: r.stamp(between()) });
  }

  const ctx: EvidenceContext = {
    r,
    created,
    host: `${r.pick(["desktop", "srv", "laptop", "dc", "vm"])}-${r.hex(6)}`,
    deviceId: r.hex(40),
    user: r.pick(USERS),
    upnDomain: r.pick(UPN_DOMAINS),
    long: false,
  };
  const evidenceCount = opts.evidenceCount ?? r.int(0, 6);
  const evidence: GraphEvidence[] = [];
  for (let i = 0; i < evidenceCount; i++) evidence.push(makeEvidence(ctx, r.weighted(profile.evidence)));

  const additionalData: Record<string, unknown> = {};
  if (detectionSource === "customDetection" || serviceSource === "microsoftSentinel") {
    additionalData.customDetails = { Zählwert: [String(r.int(1, 99))], Host: [ctx.host] };
  }
  if (serviceSource === "dataLossPrevention") {
    additionalData.policyName = r.pick(["Finanzdaten – extern", "PCI DSS", "U.S. PII"]);
    additionalData.matchCount = r.int(1, 500);
  }

  const alert: GraphAlert = {
    "@odata.type": "#microsoft.graph.security.alert",
    id: generatedId,
    providerAlertId: generatedProviderId,
    incidentId,
    status,
    severity: r.weighted(SEVERITIES),
    classification,
    determination,
    serviceSource,
    detectionSource,
    detectorId: r.chance(0.95) ? r.uuid() : null,
    tenantId,
    title: template.title,
    description: template.description,
    recommendedActions: r.chance(0.6)
      ? "1. Review the timeline of the affected entities.\n2. Contain: isolate the device or disable the account if confirmed.\n3. Reset credentials that may be exposed."
      : r.chance(0.5)
        ? ""
        : null,
    category: template.category,
    assignedTo: resolved || r.chance(0.3) ? r.pick(ANALYSTS) : null,
    alertWebUrl: "",
    incidentWebUrl: null,
    actorDisplayName: r.chance(0.08) ? r.pick(ACTORS) : null,
    threatDisplayName: threat ? threat[1] : null,
    threatFamilyName: threat ? threat[0] : null,
    mitreTechniques: template.mitre.filter(() => r.chance(0.85)),
    createdDateTime: r.stamp(created),
    lastUpdateDateTime,
    resolvedDateTime: resolved ? r.stamp(between()) : null,
    firstActivityDateTime: r.chance(0.97) ? r.stamp(firstActivity) : null,
    lastActivityDateTime: r.chance(0.97) ? r.stamp(lastActivity) : null,
    comments,
    evidence,
    systemTags: r.chance(0.15) ? [r.pick(SYSTEM_TAGS)] : [],
    alertPolicyId: r.chance(profile.policy) ? r.uuid() : null,
    additionalData,
  };

  const overrides = alert as unknown as Record<string, unknown>;
  for (const [key, value] of Object.entries(opts)) {
    if (!OPTION_KEYS.has(key) && value !== undefined) overrides[key] = value;
  }
  if (opts.id !== undefined && opts.providerAlertId === undefined) alert.providerAlertId = opts.id;
  if (opts.alertWebUrl === undefined) {
    alert.alertWebUrl = `https://security.microsoft.com/alerts/${encodeURIComponent(alert.id)}?tid=${alert.tenantId}`;
  }
  if (opts.incidentWebUrl === undefined) {
    alert.incidentWebUrl =
      alert.incidentId === null ? null : `https://security.microsoft.com/incidents/${alert.incidentId}?tid=${alert.tenantId}`;
  }
  return alert;
}

export interface MakeGraphAlertsOptions extends Omit<MakeGraphAlertOptions, "lastUpdateDateTime" | "id" | "providerAlertId" | "rng"> {
  count: number;
  /** lastUpdateDateTime is spread uniformly over [from, to). */
  from: Date;
  to: Date;
  seed?: number | string;
}

/** `count` alerts with unique ids and random lastUpdateDateTime in [from, to). */
export function makeGraphAlerts(opts: MakeGraphAlertsOptions): GraphAlert[] {
  const { count, from, to, seed, ...rest } = opts;
  const rng = createRng(seed ?? 1);
  const span = to.getTime() - from.getTime();
  const ids = new Set<string>();
  const out: GraphAlert[] = [];
  while (out.length < count) {
    const at = new Date(from.getTime() + Math.floor(rng() * span));
    const alert = makeGraphAlert({ ...rest, rng, lastUpdateDateTime: at });
    if (ids.has(alert.id)) continue;
    ids.add(alert.id);
    out.push(alert);
  }
  return out;
}

/**
 * An alert whose JSON is at least `targetBytes` (UTF-8) long, through a long list of
 * process and file evidence with random hashes, paths and encoded command lines: far from
 * trivially compressible.
 */
export function makeLargeGraphAlert(targetBytes: number, opts: Partial<MakeGraphAlertOptions> = {}): GraphAlert {
  const alert = makeGraphAlert({
    serviceSource: "microsoftDefenderForEndpoint",
    ...opts,
    lastUpdateDateTime: opts.lastUpdateDateTime ?? new Date("2024-01-01T00:00:00Z"),
    evidenceCount: 0,
  });
  const r = new R(opts.rng ?? createRng(`large:${alert.id}`));
  const ctx: EvidenceContext = {
    r,
    created: parseTimestamp(alert.createdDateTime) ?? 0n,
    host: `srv-${r.hex(6)}`,
    deviceId: r.hex(40),
    user: r.pick(USERS),
    upnDomain: r.pick(UPN_DOMAINS),
    long: true,
  };
  let size = Buffer.byteLength(JSON.stringify(alert));
  while (size < targetBytes) {
    const ev = makeEvidence(ctx, r.weighted([
      ["process", 6],
      ["file", 3],
      ["registryValue", 1],
    ] as const));
    size += Buffer.byteLength(JSON.stringify(ev)) + (alert.evidence.length > 0 ? 1 : 0);
    alert.evidence.push(ev);
  }
  return alert;
}

// ---------------------------------------------------------------------------
// Evidence.

interface EvidenceContext {
  r: R;
  created: bigint;
  host: string;
  deviceId: string;
  user: (typeof USERS)[number];
  upnDomain: string;
  /** Long values (for makeLargeGraphAlert). */
  long: boolean;
}

function base(ctx: EvidenceContext, kind: GraphEvidenceKind, roles: readonly string[]): GraphEvidenceBase {
  const { r } = ctx;
  const at = ctx.created + BigInt(r.int(0, 2000)) * TICKS_PER_MS + BigInt(r.int(0, 9999));
  const verdict = r.weighted([
    ["unknown", 5],
    ["suspicious", 3],
    ["malicious", 3],
    ["noThreatsFound", 1],
  ] as const);
  const remediationStatus = r.weighted([
    ["none", 6],
    ["remediated", 2],
    ["prevented", 1],
    ["blocked", 1],
    ["notFound", 1],
  ] as const);
  return {
    "@odata.type": GRAPH_EVIDENCE_TYPES[kind],
    createdDateTime: r.stamp(at),
    verdict,
    remediationStatus,
    remediationStatusDetails: remediationStatus === "none" || r.chance(0.5) ? null : "Remediated by automated investigation 4711",
    roles: r.chance(0.6) ? [r.pick(roles)] : [],
    detailedRoles: r.chance(0.3) ? [r.pick(["Main device", "Referred in command line", "Parent process", "Recipient", "Attacker IP"])] : [],
    tags: r.chance(0.1) ? [r.pick(["High value asset", "Test Machine", "VIP – Vorstand"])] : [],
  };
}

function userAccount(ctx: EvidenceContext, random = false): GraphUserAccount {
  const { r } = ctx;
  const [accountName, domainName, displayName] = random ? r.pick(USERS) : ctx.user;
  const onPrem = r.chance(0.7);
  return {
    accountName,
    domainName: onPrem ? domainName : null,
    userSid: onPrem ? `S-1-5-21-${r.int(1e8, 4e9)}-${r.int(1e8, 4e9)}-${r.int(1e8, 4e9)}-${r.int(500, 99_999)}` : null,
    azureAdUserId: r.chance(0.8) ? r.uuid() : null,
    userPrincipalName: r.chance(0.85) ? `${accountName}@${ctx.upnDomain}` : null,
    displayName,
  };
}

function fileDetails(ctx: EvidenceContext, name: string, path: string, publisher: string | null): GraphFileDetails {
  const { r } = ctx;
  const signed = publisher !== null && r.chance(0.8);
  return {
    sha1: r.chance(0.95) ? r.hex(40) : null,
    sha256: r.chance(0.95) ? r.hex(64) : null,
    fileName: name,
    filePath: path,
    fileSize: r.chance(0.9) ? r.int(1_024, 60_000_000) : null,
    filePublisher: publisher,
    signer: signed ? publisher : null,
    issuer: signed ? "Microsoft Windows Production PCA 2011" : null,
  };
}

function ipAddress(r: R): string {
  return r.chance(0.8)
    ? `${r.int(1, 223)}.${r.int(0, 255)}.${r.int(0, 255)}.${r.int(1, 254)}`
    : `2001:db8:${r.hex(4)}:${r.hex(4)}::${r.hex(4)}`;
}

function randomPath(ctx: EvidenceContext): string {
  const { r } = ctx;
  const user = ctx.user[0].replace(/[^\w.-]/g, "_");
  let path = r.pick([`C:\\Users\\${user}\\AppData\\Local\\Temp`, `C:\\Users\\${user}\\Downloads`, "C:\\ProgramData", "C:\\Users\\Public"]);
  path += `\\${r.hex(8)}`;
  if (ctx.long) for (let i = r.int(1, 4); i > 0; i--) path += `\\${r.base64(r.int(4, 16)).replace(/[+/]/g, "_")}`;
  return path;
}

function commandLine(ctx: EvidenceContext, name: string): string {
  const { r, long } = ctx;
  switch (r.int(0, 2)) {
    case 0:
      return `${name} -NoProfile -ExecutionPolicy Bypass -EncodedCommand ${r.base64(long ? r.int(200, 1500) : r.int(40, 120))}`;
    case 1:
      return `${name} ${randomPath(ctx)}\\${r.hex(6)}.dll,${r.pick(["DllRegisterServer", "Start", "#1"])}`;
    default:
      return `"${name}" /c copy /y \\\\${r.hex(6)}\\share$\\${r.hex(10)}.bat %TEMP% && ${r.hex(10)}.bat ${r.hex(long ? 64 : 16)}`;
  }
}

function makeEvidence(ctx: EvidenceContext, kind: GraphEvidenceKind): GraphEvidence {
  const { r } = ctx;
  switch (kind) {
    case "device": {
      const azure = r.chance(0.3);
      return {
        ...base(ctx, kind, ["compromised", "attacked", "source", "destination"]),
        "@odata.type": "#microsoft.graph.security.deviceEvidence",
        firstSeenDateTime: r.stamp(ctx.created - BigInt(r.int(1, 400)) * 864_000_000_000n),
        mdeDeviceId: r.chance(0.9) ? ctx.deviceId : null,
        azureAdDeviceId: r.chance(0.6) ? r.uuid() : null,
        deviceDnsName: r.chance(0.8) ? `${ctx.host}.${r.pick(DNS_SUFFIXES)}` : ctx.host,
        osPlatform: r.pick(["Windows11", "Windows10", "WindowsServer2022", "Linux", "macOS", null]),
        osBuild: r.chance(0.9) ? r.int(17_763, 26_100) : null,
        version: r.pick(["24H2", "23H2", "22H2", "Other", null]),
        healthStatus: r.pick(["active", "inactive", "impairedCommunication", "noSensorData", "unknown"]),
        riskScore: r.pick(["none", "informational", "low", "medium", "high"]),
        rbacGroupId: r.chance(0.8) ? r.int(1, 500) : null,
        rbacGroupName: r.chance(0.8) ? r.pick(RBAC_GROUPS) : null,
        onboardingStatus: r.pick(["onboarded", "onboarded", "canBeOnboarded", "insufficientInfo", "unsupported"]),
        defenderAvStatus: r.pick(["updated", "updated", "notUpdated", "disabled", "notReporting", "unknown", "notSupported"]),
        ipInterfaces: Array.from({ length: r.int(0, 3) }, () => ipAddress(r)),
        loggedOnUsers: r.chance(0.7) ? [{ accountName: ctx.user[0], domainName: ctx.user[1] }] : [],
        vmMetadata: azure
          ? {
              vmId: r.uuid(),
              cloudProvider: "azure",
              resourceId: `/subscriptions/${r.uuid()}/resourceGroups/rg-${r.hex(4)}/providers/Microsoft.Compute/virtualMachines/${ctx.host}`,
              subscriptionId: r.uuid(),
            }
          : null,
      };
    }
    case "file": {
      const name = `${r.pick(["invoice_", "setup", "Rechnung-", "报告", "update", "payload"])}${r.hex(4)}${r.pick([".exe", ".dll", ".ps1", ".docm", ".lnk", ".js"])}`;
      return {
        ...base(ctx, kind, ["contextual", "loaded", "created", "suspicious"]),
        "@odata.type": "#microsoft.graph.security.fileEvidence",
        detectionStatus: r.pick(["detected", "blocked", "prevented", null]),
        mdeDeviceId: r.chance(0.8) ? ctx.deviceId : null,
        fileDetails: fileDetails(ctx, name, randomPath(ctx), r.chance(0.3) ? "Unknown Publisher GmbH" : null),
      };
    }
    case "process": {
      const [name, dir, publisher] = r.pick(PROCESSES);
      const [parentName, parentDir, parentPublisher] = r.pick(PROCESSES);
      const at = ctx.created - BigInt(r.int(1, 120_000)) * TICKS_PER_MS - BigInt(r.int(0, 9999));
      return {
        ...base(ctx, kind, ["contextual", "suspicious", "created"]),
        "@odata.type": "#microsoft.graph.security.processEvidence",
        processId: r.int(4, 65_535),
        parentProcessId: r.chance(0.95) ? r.int(4, 65_535) : null,
        processCommandLine: commandLine(ctx, name),
        processCreationDateTime: r.stamp(at),
        parentProcessCreationDateTime: r.chance(0.9) ? r.stamp(at - BigInt(r.int(1, 600_000)) * TICKS_PER_MS) : null,
        detectionStatus: r.pick(["detected", "blocked", "prevented", null]),
        mdeDeviceId: ctx.deviceId,
        imageFile: fileDetails(ctx, name, dir, publisher),
        parentProcessImageFile: r.chance(0.9) ? fileDetails(ctx, parentName, parentDir, parentPublisher) : null,
        userAccount: r.chance(0.85) ? userAccount(ctx) : null,
      };
    }
    case "user":
      return {
        ...base(ctx, kind, ["compromised", "attacked", "source", "contextual"]),
        "@odata.type": "#microsoft.graph.security.userEvidence",
        userAccount: userAccount(ctx, r.chance(0.3)),
      };
    case "ip":
      return {
        ...base(ctx, kind, ["attacker", "source", "destination", "commandAndControl"]),
        "@odata.type": "#microsoft.graph.security.ipEvidence",
        ipAddress: ipAddress(r),
        countryLetterCode: r.pick(COUNTRIES),
      };
    case "url":
      return {
        ...base(ctx, kind, ["commandAndControl", "contextual", "suspicious"]),
        "@odata.type": "#microsoft.graph.security.urlEvidence",
        url: `https://${r.hex(8)}.${r.pick(["example.com", "contoso-cdn.net", "xn--bcher-kva.example"])}/${r.base64(ctx.long ? r.int(40, 400) : r.int(8, 40)).replace(/[+/]/g, "_")}?id=${r.hex(12)}`,
      };
    case "mailbox": {
      const account = userAccount(ctx, r.chance(0.3));
      const address = `${account.accountName}@${ctx.upnDomain}`;
      return {
        ...base(ctx, kind, ["destination", "compromised", "policyViolator"]),
        "@odata.type": "#microsoft.graph.security.mailboxEvidence",
        displayName: account.displayName,
        primaryAddress: address,
        upn: r.chance(0.9) ? address : null,
        userAccount: r.chance(0.8) ? account : null,
      };
    }
    case "cloudApplication": {
      const [appId, displayName] = r.pick(CLOUD_APPS);
      return {
        ...base(ctx, kind, ["contextual", "destination"]),
        "@odata.type": "#microsoft.graph.security.cloudApplicationEvidence",
        appId,
        displayName,
        instanceId: r.chance(0.7) ? 0 : r.int(1, 9_999_999),
        instanceName: r.chance(0.8) ? displayName : null,
        saasAppId: appId,
      };
    }
    case "analyzedMessage": {
      const senderDomain = r.pick(["examp1e-payments.com", "contoso-support.net", "mail.xn--80ak6aa92e.example"]);
      const sender = { emailAddress: `billing@${senderDomain}`, displayName: r.pick(["Accounts Payable", "Buchhaltung", "IT Helpdesk 🔒"]), domainName: senderDomain };
      const urlCount = r.int(0, 4);
      return {
        ...base(ctx, kind, ["contextual", "destination"]),
        "@odata.type": "#microsoft.graph.security.analyzedMessageEvidence",
        networkMessageId: r.uuid(),
        internetMessageId: `<${r.hex(16)}@${senderDomain}>`,
        subject: r.pick(["Invoice 2024-0815 overdue", "Ihre Rechnung – bitte prüfen", "Action required: password expires", null]),
        language: r.pick(["en", "de", "ja", null]),
        senderIp: ipAddress(r),
        recipientEmailAddress: `${ctx.user[0]}@${ctx.upnDomain}`,
        antiSpamDirection: r.pick(["inbound", "inbound", "outbound", "intraorg"]),
        deliveryAction: r.pick(["delivered", "deliveredAsSpam", "junked", "blocked", "replaced"]),
        deliveryLocation: r.pick(["inbox", "junkFolder", "quarantine", "deletedFolder", "failed", "dropped"]),
        urn: r.chance(0.5) ? `urn:MailEntity:${r.hex(32)}` : null,
        threats: r.chance(0.7) ? [r.pick(["Phish", "Malware", "Spam", "HighConfPhish"])] : [],
        threatDetectionMethods: r.chance(0.7) ? [r.pick(["URL detonation reputation", "File detonation", "Impersonation domain", "Spoof DMARC"])] : [],
        urls: Array.from({ length: urlCount }, () => `https://${r.hex(6)}.${senderDomain}/${r.hex(10)}`),
        urlCount,
        attachmentsCount: r.int(0, 3),
        receivedDateTime: r.stamp(ctx.created - BigInt(r.int(1, 3_600_000)) * TICKS_PER_MS),
        p1Sender: sender,
        p2Sender: r.chance(0.8) ? sender : { emailAddress: null, displayName: null, domainName: null },
      };
    }
    case "registryKey": {
      const key = r.pick(["SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run", "SYSTEM\\CurrentControlSet\\Services\\" + r.hex(8)]);
      return {
        ...base(ctx, kind, ["edited", "created"]),
        "@odata.type": "#microsoft.graph.security.registryKeyEvidence",
        registryKey: key,
        registryHive: "HKEY_LOCAL_MACHINE",
      };
    }
    case "registryValue": {
      const hive = r.pick(["HKEY_LOCAL_MACHINE", "HKEY_CURRENT_USER"]);
      return {
        ...base(ctx, kind, ["edited", "created"]),
        "@odata.type": "#microsoft.graph.security.registryValueEvidence",
        mdeDeviceId: ctx.deviceId,
        registryKey: `SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run${ctx.long ? `\\${r.hex(12)}` : ""}`,
        registryHive: hive,
        registryValue: `${randomPath(ctx)}\\${r.hex(8)}.exe ${r.base64(ctx.long ? r.int(20, 300) : 12)}`,
        registryValueName: r.pick(["Updater", "OneDriveSync", "Überwachung", r.hex(6)]),
        registryValueType: r.pick(["String", "ExpandString", "Binary", "Dword", null]),
      };
    }
    case "oauthApplication":
      return {
        ...base(ctx, kind, ["contextual", "suspicious"]),
        "@odata.type": "#microsoft.graph.security.oauthApplicationEvidence",
        appId: r.uuid(),
        displayName: r.pick(["Mail Sync Helper", "PDF Konverter Pro", "Calendar ✨ Assistant"]),
        objectId: r.uuid(),
        publisher: r.chance(0.6) ? r.pick(["Unverified", "Fabrikam Apps Ltd"]) : null,
      };
    case "securityGroup":
      return {
        ...base(ctx, kind, ["added", "contextual"]),
        "@odata.type": "#microsoft.graph.security.securityGroupEvidence",
        displayName: r.pick(["Domain Admins", "Enterprise Admins", "Backup Operators", "Administrateurs du domaine"]),
        securityGroupId: r.uuid(),
      };
  }
}
