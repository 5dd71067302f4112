/**
 * HTTP trigger routing as the Functions host does it: `<routePrefix>/<route>` (the route
 * defaults to the function name), literal segments case-insensitive, `{name}` for one
 * segment, `{name?}` optional at the end, `{*name}` for the rest, and the constraints
 * `int`, `long`, `bool`, `guid`, `alpha`. The most specific route wins (a literal over a
 * constrained parameter over a parameter over a catch-all); methods are upper case, none
 * means every method.
 */
import { HostError } from "./core-module.js";
import type { AppFunction } from "./load.js";

type Segment =
  | { kind: "literal"; text: string }
  | { kind: "param"; name: string; optional: boolean; constraint?: (v: string) => boolean }
  | { kind: "catchAll"; name: string };

export interface HttpRoute {
  fn: AppFunction;
  /** The route template after the prefix, as registered. */
  template: string;
  /** `/api/tenants/{tenantId}` */
  path: string;
  methods: string[] | undefined;
  authLevel: "anonymous" | "function" | "admin";
  segments: Segment[];
}

const CONSTRAINTS: Record<string, (v: string) => boolean> = {
  int: (v) => /^-?\d+$/.test(v) && Math.abs(Number(v)) <= 2 ** 31,
  long: (v) => /^-?\d+$/.test(v),
  bool: (v) => /^(true|false)$/i.test(v),
  guid: (v) => /^\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$/i.test(v),
  alpha: (v) => /^[a-z]+$/i.test(v),
};

/** Compiles the route of an HTTP function; throws naming what this host cannot route. */
export function compileRoute(fn: AppFunction, routePrefix: string): HttpRoute {
  const template = String(fn.trigger.route ?? fn.name).replace(/^\/+|\/+$/g, "");
  const full = [routePrefix, template].filter((p) => p !== "").join("/");
  const segments: Segment[] = [];
  for (const part of full.split("/")) {
    if (part === "") continue;
    const param = /^\{(\*?)([A-Za-z_][\w]*)(?::([A-Za-z]+))?(\?)?\}$/.exec(part);
    if (param) {
      const [, star, name, constraint, optional] = param;
      if (star) {
        segments.push({ kind: "catchAll", name: name! });
        continue;
      }
      const check = constraint ? CONSTRAINTS[constraint.toLowerCase()] : undefined;
      if (constraint && !check) throw new HostError(`Route '${template}' of '${fn.name}' uses the constraint '${constraint}', which the dev host does not support.`);
      segments.push({ kind: "param", name: name!, optional: optional === "?", ...(check ? { constraint: check } : {}) });
    } else if (/[{}]/.test(part)) {
      throw new HostError(`Route '${template}' of '${fn.name}' mixes text and parameters in one segment, which the dev host does not support.`);
    } else {
      segments.push({ kind: "literal", text: part });
    }
  }
  const methods = Array.isArray(fn.trigger.methods) && fn.trigger.methods.length > 0 ? fn.trigger.methods.map((m) => String(m).toUpperCase()) : undefined;
  const level = String(fn.trigger.authLevel ?? "function").toLowerCase();
  const authLevel = level === "anonymous" || level === "admin" ? level : "function";
  return { fn, template, path: `/${full}`, methods, authLevel, segments };
}

/** Orders routes most specific first. */
export function sortRoutes(routes: HttpRoute[]): HttpRoute[] {
  const rank = (s: Segment | undefined): number =>
    !s ? 5 : s.kind === "literal" ? 0 : s.kind === "catchAll" ? 4 : s.optional ? 3 : s.constraint ? 1 : 2;
  return [...routes].sort((a, b) => {
    const n = Math.max(a.segments.length, b.segments.length);
    for (let i = 0; i < n; i++) {
      const d = rank(a.segments[i]) - rank(b.segments[i]);
      if (d !== 0) return d;
    }
    return a.fn.name.localeCompare(b.fn.name);
  });
}

/** The route parameters when `segments` (decoded path segments) match the route, else undefined. */
export function matchRoute(route: HttpRoute, segments: string[]): Record<string, string> | undefined {
  const params: Record<string, string> = {};
  let i = 0;
  for (const [index, seg] of route.segments.entries()) {
    if (seg.kind === "catchAll") {
      const rest = segments.slice(i).join("/");
      if (rest !== "") params[seg.name] = rest;
      return params;
    }
    const value = segments[i];
    if (value === undefined) {
      // Only trailing optional parameters may be missing.
      if (seg.kind === "param" && seg.optional && route.segments.slice(index).every((s) => s.kind === "param" && s.optional)) return params;
      return undefined;
    }
    if (seg.kind === "literal") {
      if (seg.text.toLowerCase() !== value.toLowerCase()) return undefined;
    } else {
      if (seg.constraint && !seg.constraint(value)) return undefined;
      params[seg.name] = value;
    }
    i++;
  }
  return i === segments.length ? params : undefined;
}

/** Splits a raw request path into decoded segments; undefined when it is not valid percent-encoding. */
export function pathSegments(rawPath: string): string[] | undefined {
  try {
    return rawPath
      .split("/")
      .filter((s) => s !== "")
      .map((s) => decodeURIComponent(s));
  } catch {
    return undefined;
  }
}
