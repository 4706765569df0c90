"use strict";
const METHODS = ["get", "post", "put", "patch", "delete"];
let SPEC = null;
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
};
// The little Markdown the document uses: `code`, **bold**, *emphasis*. No HTML is parsed.
function inline(text) {
  const span = el("span");
  let last = 0;
  for (const match of (text || "").matchAll(/`[^`]+`|\*\*[^*]+\*\*|\*[^*\s][^*]*\*/g)) {
    span.append(text.slice(last, match.index));
    const token = match[0];
    if (token.startsWith("`")) span.append(el("code", {}, token.slice(1, -1)));
    else if (token.startsWith("**")) span.append(el("b", {}, token.slice(2, -2)));
    else span.append(el("em", {}, token.slice(1, -1)));
    last = match.index + token.length;
  }
  span.append((text || "").slice(last));
  return span;
}
const refName = (ref) => ref.split("/").pop();
const resolve = (item) => item && item.$ref
  ? item.$ref.split("/").slice(1).reduce((node, key) => node[key], SPEC) : item;
const star = () => el("span", { class: "req", title: "required" }, " *");
const pretty = (value) => el("pre", {}, JSON.stringify(value, null, 2));
function typeOf(schema) {
  if (schema === true || !schema || Object.keys(schema).length === 0) return "any";
  if (schema.$ref) {
    const name = refName(schema.$ref);
    return el("a", { href: "#schema-" + name }, name);
  }
  const union = schema.anyOf || schema.oneOf;
  if (union && !schema.properties) {
    const span = el("span");
    union.forEach((part, index) => {
      if (index) span.append(" | ");
      span.append(typeOf(part));
    });
    return span;
  }
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.type === "array") return el("span", {}, "array of ", typeOf(schema.items));
  if (schema.type === "object" && schema.additionalProperties) {
    return schema.additionalProperties === true
      ? "object" : el("span", {}, "object of ", typeOf(schema.additionalProperties));
  }
  return Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "any";
}
function constraints(schema) {
  const words = [];
  const names = ["minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems",
    "pattern", "format", "default"];
  const walk = (s) => {
    if (!s) return;
    for (const name of names) {
      if (s[name] !== undefined) words.push(name + ": " + JSON.stringify(s[name]));
    }
    (s.anyOf || []).forEach(walk);
    if (s.items) walk(s.items);
  };
  walk(schema);
  return words.join(", ");
}
function table(headings, rows) {
  return el("table", {}, el("tr", {}, ...headings.map((h) => el("th", {}, h))), ...rows);
}
function propertiesTable(schema) {
  const required = new Set(schema.required || []);
  return table(["field", "type", "description"],
    Object.entries(schema.properties || {}).map(([name, prop]) => el("tr", {},
      el("td", {}, el("code", {}, name), required.has(name) ? star() : null),
      el("td", {}, typeOf(prop)),
      el("td", {}, inline(prop.description), el("div", { class: "muted" }, constraints(prop))))));
}
function schemaBlock(media) {
  const block = el("div");
  if (!media || !media.schema) return block;
  const target = resolve(media.schema);
  block.append(el("div", {}, "Schema: ", typeOf(media.schema)));
  if (target.description) block.append(el("p", {}, inline(target.description)));
  if (target.properties) block.append(propertiesTable(target));
  const examples = media.examples
    ? Object.values(media.examples).map((e) => e.value) : target.examples || [];
  if (examples.length) block.append(el("div", {}, examples.length > 1 ? "Examples" : "Example"));
  examples.forEach((example) => block.append(pretty(example)));
  return block;
}
function operationBlock(path, method, op) {
  const role = op["x-role"];
  const details = el("details", { id: op.operationId },
    el("summary", {}, el("span", { class: "method " + method }, method.toUpperCase()), " ",
      el("code", {}, path), " ", op.summary, " ",
      el("span", { class: "role " + role }, role === "public" ? "public" : "bearer · " + role)));
  if (op.description) details.append(el("p", {}, inline(op.description)));
  if (op.parameters) {
    details.append(el("h4", {}, "Parameters"));
    details.append(table(["name", "in", "type", "description"],
      op.parameters.map((p) => el("tr", {},
        el("td", {}, el("code", {}, p.name), p.required ? star() : null),
        el("td", {}, p.in), el("td", {}, typeOf(p.schema)),
        el("td", {}, inline(p.description),
          el("div", { class: "muted" }, constraints(p.schema)))))));
  }
  if (op.requestBody) {
    details.append(el("h4", {}, "Request body (JSON)"));
    details.append(schemaBlock(op.requestBody.content["application/json"]));
  }
  details.append(el("h4", {}, "Responses"));
  details.append(table(["status", "description", "body"],
    Object.entries(op.responses).map(([status, response]) => {
      const resolved = resolve(response);
      const media = Object.values(resolved.content || {})[0];
      return el("tr", {}, el("td", {}, el("b", {}, status)),
        el("td", {}, inline(resolved.description)),
        el("td", {}, media && media.schema ? typeOf(media.schema) : ""));
    })));
  return details;
}
function render(spec) {
  SPEC = spec;
  const root = document.getElementById("root");
  root.textContent = "";
  document.title = spec.info.title + " API";
  root.append(el("h1", {}, spec.info.title + " API ", el("small", {}, "v" + spec.info.version)));
  root.append(el("p", {}, "OpenAPI " + spec.openapi + " document: ",
    el("a", { href: "openapi.json" }, "/api/openapi.json")));
  for (const para of spec.info.description.split("\n\n")) root.append(el("p", {}, inline(para)));
  for (const tag of spec.tags) {
    const section = el("section", {}, el("h2", {}, tag.name),
      el("p", { class: "muted" }, inline(tag.description)));
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const method of METHODS) {
        const op = item[method];
        if (op && op.tags.includes(tag.name)) section.append(operationBlock(path, method, op));
      }
    }
    root.append(section);
  }
  const schemas = el("section", {}, el("h2", {}, "Schemas"));
  for (const [name, schema] of Object.entries(spec.components.schemas)) {
    const box = el("div", { id: "schema-" + name, class: "schema" }, el("h3", {}, name));
    if (schema.description) box.append(el("p", {}, inline(schema.description)));
    if (schema.properties) box.append(propertiesTable(schema));
    else box.append(el("div", {}, typeOf(schema)));
    (schema.examples || []).forEach((example) => box.append(pretty(example)));
    schemas.append(box);
  }
  root.append(schemas);
  const target = location.hash && document.getElementById(location.hash.slice(1));
  if (target) {
    if (target.tagName === "DETAILS") target.open = true;
    target.scrollIntoView();
  }
}
fetch("openapi.json")
  .then((response) => response.json())
  .then(render)
  .catch((error) => {
    document.getElementById("root").textContent = "Could not load the document: " + error;
  });
