// Every npm script runs this first: it reads engines.node from package.json and stops
// with one line when this Node.js does not satisfy it. Written for any Node.js version
// (ES5, CommonJS), so it still runs where the rest of the project cannot.
// Overrides for tests: CHECK_NODE_VERSION (the version to check), CHECK_NODE_PACKAGE (the package.json).
// biome-ignore-all lint/correctness/noInnerDeclarations: ES5 has only function-scoped var
// biome-ignore-all lint/style/useNodejsImportProtocol: "node:" specifiers need Node.js 14.18+
"use strict";
var fs = require("fs");
var path = require("path");

function parse(version) {
  var m = /^v?(\d+)(?:\.(\d+|x|\*))?(?:\.(\d+|x|\*))?/i.exec(String(version).trim());
  if (!m) return null;
  var parts = [m[1], m[2], m[3]];
  var out = [];
  for (var i = 0; i < 3; i++) out.push(parts[i] === undefined || /^[x*]$/i.test(parts[i]) ? null : Number(parts[i]));
  return out;
}

function compare(a, b) {
  for (var i = 0; i < 3; i++) {
    var x = a[i] || 0;
    var y = b[i] || 0;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

// One comparator: >=, >, <=, <, =, ^, ~, or a bare (possibly partial) version.
function satisfiesOne(v, comparator) {
  var m = /^(>=|<=|>|<|=|\^|~)?\s*(.+)$/.exec(comparator);
  if (!m) return false;
  var op = m[1] || "";
  var want = parse(m[2]);
  if (!want) return false;
  var floor = [want[0], want[1] || 0, want[2] || 0];
  if (op === ">=") return compare(v, floor) >= 0;
  if (op === "<") return compare(v, floor) < 0;
  if (op === ">") {
    if (want[1] === null) return v[0] > want[0];
    if (want[2] === null) return compare(v, [want[0], want[1] + 1, 0]) >= 0;
    return compare(v, floor) > 0;
  }
  if (op === "<=") {
    if (want[1] === null) return v[0] <= want[0];
    if (want[2] === null) return compare(v, [want[0], want[1] + 1, 0]) < 0;
    return compare(v, floor) <= 0;
  }
  var upper;
  if (op === "^") {
    if (want[0] > 0 || want[1] === null) upper = [want[0] + 1, 0, 0];
    else if (want[1] > 0 || want[2] === null) upper = [0, want[1] + 1, 0];
    else upper = [0, 0, want[2] + 1];
  } else if (op === "~") {
    upper = want[1] === null ? [want[0] + 1, 0, 0] : [want[0], want[1] + 1, 0];
  } else {
    // = or bare: partial versions are ranges (22 means 22.x.x).
    upper = want[1] === null ? [want[0] + 1, 0, 0] : want[2] === null ? [want[0], want[1] + 1, 0] : null;
    if (!upper) return compare(v, floor) === 0;
  }
  return compare(v, floor) >= 0 && compare(v, upper) < 0;
}

function satisfies(version, range) {
  var v = parse(version);
  if (!v) return false;
  var alternatives = String(range).split("||");
  for (var i = 0; i < alternatives.length; i++) {
    var text = alternatives[i].trim();
    var hyphen = /^(\S+)\s+-\s+(\S+)$/.exec(text);
    var comparators = hyphen ? [">=" + hyphen[1], "<=" + hyphen[2]] : text.replace(/(>=|<=|>|<|=|\^|~)\s+/g, "$1").split(/\s+/);
    var ok = true;
    for (var j = 0; j < comparators.length; j++) {
      if (comparators[j] === "" || comparators[j] === "*" || /^x$/i.test(comparators[j])) continue;
      if (!satisfiesOne(v, comparators[j])) {
        ok = false;
        break;
      }
    }
    if (ok) return true;
  }
  return false;
}

var pkgPath = process.env.CHECK_NODE_PACKAGE || path.join(__dirname, "..", "package.json");
var found = process.env.CHECK_NODE_VERSION || process.versions.node;
var range;
try {
  range = JSON.parse(fs.readFileSync(pkgPath, "utf8")).engines.node;
} catch (_err) {
  range = undefined;
}
if (typeof range !== "string" || range.trim() === "") {
  process.stderr.write("check-node: " + pkgPath + " has no engines.node; nothing to check\n");
} else if (!satisfies(found, range)) {
  process.stderr.write(
    "This project needs Node.js " + range + " (engines.node in package.json), but this is Node.js " + found + ": install a newer Node.js and run the command again.\n"
  );
  process.exit(1);
}
