"use strict";
// /docs: the gateway's OpenAPI document (/openapi.json) as a page: every operation with its
// parameters, request body and responses, then every schema. No dependencies, no CDN.

const $ = (selector) => document.querySelector(selector);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function schemaText(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  const parts = [];
  if (schema.type) parts.push(Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type);
  if (schema.enum) parts.push("one of " + schema.enum.join(", "));
  if (schema.const !== undefined) parts.push("= " + JSON.stringify(schema.const));
  for (const key of ["minimum", "maximum", "minLength", "maxLength", "pattern", "default", "format"]) {
    if (schema[key] !== undefined) parts.push(key + " " + schema[key]);
  }
  if (schema.oneOf) parts.push(schema.oneOf.map(schemaText).join(" | "));
  return parts.join("; ");
}

function table(headings, rows) {
  return element(
    "table",
    { class: "docs-table" },
    element("thead", {}, element("tr", {}, ...headings.map((text) => element("th", { text })))),
    element("tbody", {}, ...rows.map((cells) => element("tr", {}, ...cells.map((text) => element("td", { text })))))
  );
}

function operationView(path, method, operation) {
  const body = element("div");
  if (operation.description) body.append(element("p", { text: operation.description }));
  const parameters = operation.parameters || [];
  if (parameters.length) {
    body.append(element("h3", { text: "Parameters" }));
    body.append(table(
      ["name", "in", "required", "schema", "description"],
      parameters.map((p) => [p.name, p.in, p.required ? "yes" : "no", schemaText(p.schema), p.description || ""])
    ));
  }
  if (operation.requestBody) {
    body.append(element("h3", { text: "Request body" }));
    body.append(table(
      ["content type", "schema"],
      Object.entries(operation.requestBody.content).map(([type, media]) => [type, schemaText(media.schema)])
    ));
  }
  body.append(element("h3", { text: "Responses" }));
  body.append(table(
    ["status", "description", "content"],
    Object.entries(operation.responses).map(([status, response]) => [
      status,
      response.description || "",
      Object.entries(response.content || {}).map(([type, media]) => type + ": " + schemaText(media.schema)).join("\n"),
    ])
  ));
  const summary = element(
    "summary",
    {},
    element("span", { class: "method", "data-method": method, text: method }),
    element("span", { class: "op-path", text: path }),
    element("span", { class: "op-summary", text: operation.summary || "" })
  );
  return element("details", { class: "card operation", id: operation.operationId || "" }, summary, body);
}

function show(document_) {
  $("#docs-title").textContent = document_.info.title + " " + document_.info.version;
  $("#docs-description").textContent = document_.info.description || "";
  const operations = [];
  for (const [path, methods] of Object.entries(document_.paths)) {
    for (const [method, operation] of Object.entries(methods)) operations.push(operationView(path, method, operation));
  }
  $("#operations").replaceChildren(...operations);
  const schemas = Object.entries(document_.components.schemas).map(([name, schema]) =>
    element(
      "details",
      { id: "schema-" + name },
      element("summary", { text: name }),
      element("pre", { class: "schema-json", text: JSON.stringify(schema, null, 2) })
    )
  );
  $("#schemas").replaceChildren(...schemas);
}

document.addEventListener("DOMContentLoaded", async () => {
  try {
    const response = await fetch("/openapi.json");
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    show(await response.json());
  } catch (error) {
    const banner = $("#docs-error");
    banner.hidden = false;
    banner.textContent = "Could not load /openapi.json: " + error.message;
  }
});
