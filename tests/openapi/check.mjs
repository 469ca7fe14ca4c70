// Checks docs/openapi.yaml: valid OpenAPI 3.1 (the official schema, through
// @seriousme/openapi-schema-validator), every $ref resolves, every schema in
// it compiles as JSON Schema 2020-12, every {param} of a path is declared,
// and its operations are exactly the routes rtmc-api serves, both ways
// (`rtmc-api --list-routes`: the Router the server fills).
//
// An operation marked `x-rtmc-pending: <branch>` is one another branch adds
// to the api: it may be missing from --list-routes, and once it is served
// the marker is an error (remove it when the branches are merged).
//
// usage: node check.mjs <openapi.yaml> <rtmc-api binary>
// Prints each problem and exits 1 when there is any.

import { Validator } from "@seriousme/openapi-schema-validator";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import Ajv2020 from "ajv/dist/2020.js";
import YAML from "yaml";

const [specPath, apiBinary] = process.argv.slice(2);
if (!specPath || !apiBinary) {
  console.error("usage: node check.mjs <openapi.yaml> <rtmc-api binary>");
  process.exit(2);
}

const problems = [];
const problem = (text) => problems.push(text);

// Parsed by us as well: a duplicate key is an error here, where the
// validator would silently keep the last one.
const text = readFileSync(specPath, "utf8");
const parsed = YAML.parseDocument(text, { uniqueKeys: true });
for (const error of parsed.errors) problem(`YAML: ${error.message}`);
const spec = parsed.toJS();

const validator = new Validator();
const result = await validator.validate(spec);
if (!result.valid) {
  for (const error of result.errors ?? [])
    problem(`OpenAPI schema: ${error.instancePath || "/"} ${error.message} ${JSON.stringify(error.params ?? {})}`);
} else if (!String(validator.version).startsWith("3.1")) {
  problem(`expected OpenAPI 3.1, the document is ${validator.version}`);
}

// Every $ref must point at something (the validator does not look).
const pointer = (ref) => {
  if (!ref.startsWith("#/")) return undefined;
  let node = spec;
  for (const raw of ref.slice(2).split("/")) {
    const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
    if (node === null || typeof node !== "object" || !(key in node)) return undefined;
    node = node[key];
  }
  return node;
};
const walk = (node, path, visit) => {
  if (node === null || typeof node !== "object") return;
  visit(node, path);
  for (const [key, value] of Object.entries(node))
    walk(value, `${path}/${encodeURIComponent(key.replace(/~/g, "~0").replace(/\//g, "~1"))}`, visit);
};
walk(spec, "#", (node, path) => {
  if (typeof node.$ref === "string" && pointer(node.$ref) === undefined)
    problem(`${path}: $ref ${node.$ref} resolves to nothing`);
});

// The schemas as JSON Schema 2020-12 (the 3.1 dialect), refs resolved
// within the document.
const ajv = new Ajv2020({ strict: false, allErrors: true });
ajv.addSchema({ ...spec, $id: "openapi.yaml" }, "openapi.yaml");
const schemaPaths = [];
walk(spec, "#", (node, path) => {
  if (node.schema && typeof node.schema === "object") schemaPaths.push(`${path}/schema`);
});
for (const name of Object.keys(spec.components?.schemas ?? {})) schemaPaths.push(`#/components/schemas/${name}`);
for (const path of schemaPaths) {
  try {
    ajv.getSchema(`openapi.yaml${path}`) ?? problem(`${path}: not found by the JSON Schema compiler`);
  } catch (error) {
    problem(`${path}: not a valid JSON Schema 2020-12: ${error.message}`);
  }
}

// Operations of the document, as the Router spells routes.
const methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
const documented = new Set();
const pending = new Map(); // route -> the branch that brings it
for (const [path, item] of Object.entries(spec.paths ?? {})) {
  const names = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
  for (const method of methods) {
    const operation = item?.[method];
    if (!operation) continue;
    documented.add(`${method.toUpperCase()} ${path}`);
    if (operation["x-rtmc-pending"]) pending.set(`${method.toUpperCase()} ${path}`, operation["x-rtmc-pending"]);
    const declared = [...(item.parameters ?? []), ...(operation.parameters ?? [])]
      .map((p) => (p.$ref ? pointer(p.$ref) : p))
      .filter((p) => p?.in === "path")
      .map((p) => p.name);
    for (const name of names)
      if (!declared.includes(name)) problem(`${method.toUpperCase()} ${path}: path parameter {${name}} is not declared`);
    for (const name of declared)
      if (!names.includes(name)) problem(`${method.toUpperCase()} ${path}: parameter ${name} is not in the path`);
    if (!operation.responses || Object.keys(operation.responses).length === 0)
      problem(`${method.toUpperCase()} ${path}: no responses`);
  }
}

let served;
try {
  served = execFileSync(apiBinary, ["--list-routes"], { encoding: "utf8" })
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
} catch (error) {
  problem(`${apiBinary} --list-routes failed: ${error.message}`);
  served = [];
}
if (served.length === 0) problem(`${apiBinary} --list-routes printed no route`);
for (const route of served) {
  if (!/^[A-Z]+ \/\S*$/.test(route)) problem(`--list-routes printed "${route}", not "METHOD /path"`);
  else if (!documented.has(route)) problem(`served but not in ${specPath}: ${route}`);
}
const servedSet = new Set(served);
for (const route of documented) {
  if (servedSet.has(route) && pending.has(route))
    problem(`${route} is served now: remove its x-rtmc-pending (${pending.get(route)}) from ${specPath}`);
  else if (!servedSet.has(route) && !pending.has(route))
    problem(`in ${specPath} but not served by rtmc-api: ${route}`);
}

if (problems.length > 0) {
  for (const line of problems) console.error(`FAIL ${line}`);
  console.error(`${problems.length} problem(s)`);
  process.exit(1);
}
const waiting = [...pending.keys()].filter((route) => !servedSet.has(route));
console.log(
  `OK ${specPath}: OpenAPI ${validator.version}, ${documented.size} operations, every route served is documented and ` +
    `every operation is served` +
    (waiting.length ? ` (pending on other branches: ${waiting.join(", ")})` : ""),
);
