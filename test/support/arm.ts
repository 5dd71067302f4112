/**
 * Reads a compiled ARM template (`bicep build --stdout`) the way Azure Resource Manager
 * would for given parameter values, as far as that is possible offline: template
 * expressions of the functions below are evaluated; anything that needs Azure
 * (`reference()`, `resourceId()`, `subscription()`, ...) becomes an `Unknown` that keeps
 * its text. Nested deployments (Bicep modules) are followed with the parameter values the
 * parent passes, so a test can ask "with vnetEnabled=true, what is the storage account's
 * publicNetworkAccess?" of the template that would really be deployed.
 */

export class Unknown {
  constructor(readonly expression: string) {}
  toString(): string {
    return `<${this.expression}>`;
  }
}

export interface ArmTemplate {
  parameters?: Record<string, { type?: string; defaultValue?: unknown; allowedValues?: unknown[]; minValue?: number; maxValue?: number }>;
  variables?: Record<string, unknown>;
  resources?: ArmResource[] | Record<string, ArmResource>;
  outputs?: Record<string, { type?: string; value?: unknown }>;
}

export interface ArmResource {
  type: string;
  name: unknown;
  condition?: unknown;
  copy?: { name: string; count: unknown };
  properties?: Record<string, unknown> & { template?: ArmTemplate; parameters?: Record<string, unknown> };
  [key: string]: unknown;
}

/** Azure public cloud values of environment(), enough for DNS zone names. */
const ENVIRONMENT = {
  name: "AzureCloud",
  suffixes: { storage: "core.windows.net", keyvaultDns: ".vault.azure.net", sqlServerHostname: ".database.windows.net" },
};

interface Scope {
  template: ArmTemplate;
  params: Record<string, unknown>;
  copyIndex?: number;
  varCache: Map<string, unknown>;
}

// ---------------------------------------------------------------------------------------
// Expression parser
// ---------------------------------------------------------------------------------------

type Node =
  | { kind: "string"; value: string }
  | { kind: "number"; value: number }
  | { kind: "call"; name: string; args: Node[]; text: string }
  | { kind: "member"; target: Node; name: string }
  | { kind: "index"; target: Node; index: Node };

function parseExpression(text: string): Node {
  let p = 0;
  const skip = () => {
    while (/\s/.test(text[p] ?? "")) p++;
  };
  const primary = (): Node => {
    skip();
    const c = text[p];
    if (c === "'") {
      let value = "";
      p++;
      while (p < text.length) {
        if (text[p] === "'") {
          if (text[p + 1] === "'") {
            value += "'";
            p += 2;
            continue;
          }
          p++;
          return { kind: "string", value };
        }
        value += text[p];
        p++;
      }
      throw new Error(`unterminated string in ${text}`);
    }
    const num = /^-?\d+/.exec(text.slice(p));
    if (num) {
      p += num[0].length;
      return { kind: "number", value: Number(num[0]) };
    }
    const ident = /^[A-Za-z_][\w.]*/.exec(text.slice(p));
    if (!ident) throw new Error(`cannot parse ${text} at ${p}`);
    const start = p;
    p += ident[0].length;
    skip();
    if (text[p] !== "(") throw new Error(`expected ( after ${ident[0]} in ${text}`);
    p++;
    const args: Node[] = [];
    skip();
    if (text[p] === ")") p++;
    else {
      for (;;) {
        args.push(expression());
        skip();
        if (text[p] === ",") {
          p++;
          continue;
        }
        if (text[p] === ")") {
          p++;
          break;
        }
        throw new Error(`expected , or ) in ${text} at ${p}`);
      }
    }
    return { kind: "call", name: ident[0].toLowerCase(), args, text: text.slice(start, p) };
  };
  const expression = (): Node => {
    let node = primary();
    for (;;) {
      skip();
      if (text[p] === ".") {
        p++;
        const m = /^[A-Za-z_$][\w$]*/.exec(text.slice(p));
        if (!m) throw new Error(`expected a property name in ${text} at ${p}`);
        p += m[0].length;
        node = { kind: "member", target: node, name: m[0] };
      } else if (text[p] === "[") {
        p++;
        const index = expression();
        skip();
        if (text[p] !== "]") throw new Error(`expected ] in ${text} at ${p}`);
        p++;
        node = { kind: "index", target: node, index };
      } else return node;
    }
  };
  const node = expression();
  skip();
  if (p !== text.length) throw new Error(`trailing text in ${text} at ${p}`);
  return node;
}

// ---------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------

const isUnknown = (v: unknown): v is Unknown => v instanceof Unknown;

function evalNode(node: Node, scope: Scope): unknown {
  switch (node.kind) {
    case "string":
    case "number":
      return node.value;
    case "member": {
      const target = evalNode(node.target, scope);
      if (isUnknown(target)) return new Unknown(`${target.expression}.${node.name}`);
      return (target as Record<string, unknown> | null)?.[node.name];
    }
    case "index": {
      const target = evalNode(node.target, scope);
      const index = evalNode(node.index, scope);
      if (isUnknown(target) || isUnknown(index)) return new Unknown(`${String(target)}[${String(index)}]`);
      return (target as Record<string | number, unknown> | null)?.[index as string | number];
    }
    case "call":
      return call(node, scope);
  }
}

function call(node: Extract<Node, { kind: "call" }>, scope: Scope): unknown {
  const lazy = node.args;
  const arg = (i: number) => evalNode(lazy[i] as Node, scope);
  switch (node.name) {
    case "if": {
      const condition = arg(0);
      if (isUnknown(condition)) return unknownCall(node.name, [condition, arg(1), arg(2)]);
      return condition ? arg(1) : arg(2);
    }
    case "and":
    case "or": {
      const values = lazy.map((_, i) => arg(i));
      if (node.name === "and" && values.some((v) => v === false)) return false;
      if (node.name === "or" && values.some((v) => v === true)) return true;
      if (values.some(isUnknown)) return new Unknown(node.text);
      return node.name === "and" ? values.every(Boolean) : values.some(Boolean);
    }
    case "parameters": {
      const name = arg(0) as string;
      if (!(name in scope.params)) throw new Error(`parameter ${name} has no value`);
      return scope.params[name];
    }
    case "variables":
      return variable(arg(0) as string, scope);
    case "copyindex": {
      if (scope.copyIndex === undefined) return new Unknown(node.text);
      return scope.copyIndex + (lazy.length > 0 ? Number(arg(lazy.length - 1)) || 0 : 0);
    }
    case "environment":
      return ENVIRONMENT;
    case "true":
      return true;
    case "false":
      return false;
    case "null":
      return null;
  }
  const args = lazy.map((_, i) => arg(i));
  // Containers hold unknown values as they are; everything else needs known arguments.
  switch (node.name) {
    case "createobject": {
      const out: Record<string, unknown> = {};
      for (let i = 0; i + 1 < args.length; i += 2) out[String(args[i])] = args[i + 1];
      return out;
    }
    case "createarray":
      return args;
  }
  if (args.some(isUnknown)) return unknownCall(node.name, args);
  switch (node.name) {
    case "not":
      return !args[0];
    case "equals":
      return JSON.stringify(args[0]) === JSON.stringify(args[1]);
    case "empty": {
      const v = args[0];
      if (v === null || v === undefined || v === "") return true;
      if (Array.isArray(v)) return v.length === 0;
      if (typeof v === "object") return Object.keys(v).length === 0;
      return false;
    }
    case "length":
      return Array.isArray(args[0]) || typeof args[0] === "string" ? (args[0] as string | unknown[]).length : Object.keys(args[0] as object).length;
    case "union": {
      if (args.every(Array.isArray)) return [...new Set(args.flat())];
      return Object.assign({}, ...(args as object[]));
    }
    case "concat":
      return args.every(Array.isArray) ? args.flat() : args.map(String).join("");
    case "format": {
      const [fmt, ...rest] = args;
      return String(fmt).replace(/\{(\d+)(:[^}]*)?\}/g, (_, i: string) => String(rest[Number(i)]));
    }
    case "replace":
      return String(args[0]).split(String(args[1])).join(String(args[2]));
    case "split": {
      const delimiters = (Array.isArray(args[1]) ? args[1] : [args[1]]).map(String);
      return delimiters.reduce<string[]>((parts, d) => parts.flatMap((p) => p.split(d)), [String(args[0])]);
    }
    case "first":
    case "last": {
      const v = args[0] as string | unknown[];
      return node.name === "first" ? v[0] : v[v.length - 1];
    }
    case "string":
      return typeof args[0] === "string" ? args[0] : JSON.stringify(args[0]);
    case "tolower":
      return String(args[0]).toLowerCase();
    case "toupper":
      return String(args[0]).toUpperCase();
    case "contains":
      return Array.isArray(args[0])
        ? args[0].includes(args[1])
        : typeof args[0] === "string"
          ? args[0].includes(String(args[1]))
          : Object.hasOwn(args[0] as object, String(args[1]));
    case "min":
      return Math.min(...(args.flat() as number[]));
    case "max":
      return Math.max(...(args.flat() as number[]));
    default:
      // reference(), resourceId(), subscription(), uniqueString(), guid(), ...: Azure decides.
      return new Unknown(node.text);
  }
}

/** An unknown result that still shows which unknown value it came from. */
function unknownCall(name: string, args: unknown[]): Unknown {
  const shown = args.map((a) => (isUnknown(a) ? a.expression : JSON.stringify(a) ?? "undefined"));
  return new Unknown(`${name}(${shown.join(", ")})`);
}

function variable(name: string, scope: Scope): unknown {
  if (scope.varCache.has(name)) return scope.varCache.get(name);
  const raw = scope.template.variables?.[name];
  if (raw === undefined) throw new Error(`variable ${name} is not defined`);
  const value = evaluate(raw, { ...scope, copyIndex: undefined });
  scope.varCache.set(name, value);
  return value;
}

/** Evaluates a template value: "[expr]" strings, and arrays and objects deeply. */
export function evaluate(value: unknown, scope: Scope): unknown {
  if (typeof value === "string") {
    if (value.startsWith("[[")) return value.slice(1);
    if (value.startsWith("[") && value.endsWith("]")) return evalNode(parseExpression(value.slice(1, -1)), scope);
    return value;
  }
  if (Array.isArray(value)) return value.map((v) => evaluate(v, scope));
  if (value && typeof value === "object" && !(value instanceof Unknown)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      // A property loop (Bicep `[for x in list: {...}]` inside properties): `copy` lists
      // the properties to build, each an array of `input` evaluated once per index.
      if (k === "copy" && Array.isArray(v) && v.every((c) => c && typeof c === "object" && "input" in c && "count" in c)) {
        for (const loop of v as { name: string; count: unknown; input: unknown }[]) {
          const count = evaluate(loop.count, scope);
          out[loop.name] =
            typeof count === "number"
              ? Array.from({ length: count }, (_, i) => evaluate(loop.input, { ...scope, copyIndex: i }))
              : new Unknown(`copy ${loop.name}`);
        }
        continue;
      }
      // Property names may be expressions too (Bicep `'${name}': ...`).
      const key = k.startsWith("[") && k.endsWith("]") && !k.startsWith("[[") ? String(evaluate(k, scope)) : k;
      out[key] = evaluate(v, scope);
    }
    return out;
  }
  return value;
}

// ---------------------------------------------------------------------------------------
// Deployment view
// ---------------------------------------------------------------------------------------

export interface DeployedResource {
  /** Module path, e.g. "main/storage". */
  module: string;
  type: string;
  name: unknown;
  /** Whether the resource deploys (its condition, evaluated). */
  deployed: boolean | Unknown;
  /** The resource, evaluated (properties, tags, sku, scope, ...). */
  resource: Record<string, unknown>;
}

function resourcesOf(template: ArmTemplate): ArmResource[] {
  const r = template.resources ?? [];
  return Array.isArray(r) ? r : Object.values(r);
}

function templateParams(template: ArmTemplate, given: Record<string, unknown>): Record<string, unknown> {
  const params: Record<string, unknown> = {};
  const scope: Scope = { template, params, varCache: new Map() };
  for (const [name, def] of Object.entries(template.parameters ?? {})) {
    if (name in given) params[name] = given[name];
    else if (def.defaultValue !== undefined) params[name] = evaluate(def.defaultValue, scope);
    else throw new Error(`required parameter ${name} has no value`);
  }
  return params;
}

/**
 * Every resource the template (and its modules) would deploy with these parameters,
 * copy loops expanded. Resources of modules whose condition is false are listed with
 * `deployed: false`.
 */
export function deploy(template: ArmTemplate, given: Record<string, unknown>, path = "main", parentDeployed: boolean | Unknown = true): DeployedResource[] {
  const params = templateParams(template, given);
  const scope: Scope = { template, params, varCache: new Map() };
  const out: DeployedResource[] = [];
  for (const res of resourcesOf(template)) {
    const count = res.copy ? evaluate(res.copy.count, scope) : 1;
    const n = typeof count === "number" ? count : 1;
    for (let i = 0; i < n; i++) {
      const itemScope: Scope = res.copy ? { ...scope, copyIndex: i } : scope;
      const condition = res.condition === undefined ? true : evaluate(res.condition, itemScope);
      const own: boolean | Unknown = isUnknown(condition) ? condition : Boolean(condition);
      const deployed: boolean | Unknown = parentDeployed === false || own === false ? false : isUnknown(parentDeployed) ? parentDeployed : own;
      if (res.type === "Microsoft.Resources/deployments" && res.properties?.template) {
        const name = String(evaluate(res.name, itemScope));
        const childParams: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(res.properties.parameters ?? {})) {
          const value = evaluate(v, itemScope);
          childParams[k] = value && typeof value === "object" && !isUnknown(value) && "value" in value ? (value as { value: unknown }).value : value;
        }
        // Where the module deploys (a `scope:` other than the parent's resource group).
        const target: Record<string, unknown> = {};
        for (const key of ["subscriptionId", "resourceGroup"]) if (res[key] !== undefined) target[key] = evaluate(res[key], itemScope);
        out.push({ module: path, type: res.type, name, deployed, resource: { name, parameters: childParams, ...target } });
        out.push(...deploy(res.properties.template, childParams, `${path}/${name}`, deployed));
        continue;
      }
      const { copy: _copy, condition: _condition, ...rest } = res;
      out.push({ module: path, type: res.type, name: evaluate(res.name, itemScope), deployed, resource: evaluate(rest, itemScope) as Record<string, unknown> });
    }
  }
  return out;
}

/** The one resource of `type` (optionally whose name includes `nameIncludes`); throws otherwise. */
export function only(resources: DeployedResource[], type: string, nameIncludes?: string): DeployedResource {
  const found = resources.filter((r) => r.type === type && (nameIncludes === undefined || String(r.name).includes(nameIncludes)));
  if (found.length !== 1) throw new Error(`expected one ${type}${nameIncludes ? ` named *${nameIncludes}*` : ""}, found ${found.length}`);
  return found[0] as DeployedResource;
}

/** A nested property, e.g. at(r, "properties.networkAcls.defaultAction"). */
export function at(resource: DeployedResource, path: string): unknown {
  let v: unknown = resource.resource;
  for (const key of path.split(".")) v = (v as Record<string, unknown> | null | undefined)?.[key];
  return v;
}
