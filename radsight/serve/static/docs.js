// Lists the operations of the OpenAPI document served by the application: no external viewer needed.
"use strict";

function schemaText(spec, schema) {
  if (!schema) return "";
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    const target = spec.components.schemas[name];
    const fields = Object.entries(target.properties || {}).map(([key, value]) =>
      `${key}${(target.required || []).includes(key) ? "" : "?"}: ${value.description || value.format || value.type || "value"}`);
    return `${name} { ${fields.join("; ")} }`;
  }
  return schema.type || JSON.stringify(schema);
}

document.addEventListener("DOMContentLoaded", async () => {
  const spec = await (await fetch("/openapi.json")).json();
  document.getElementById("version").textContent = spec.info.version;
  document.getElementById("description").textContent = spec.info.description || "";
  const main = document.getElementById("operations");
  for (const [path, operations] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const section = document.createElement("section");
      section.className = "operation";
      const title = document.createElement("h2");
      title.textContent = `${method.toUpperCase()} ${path}`;
      const summary = document.createElement("p");
      summary.textContent = operation.summary || "";
      section.append(title, summary);
      const list = document.createElement("ul");
      for (const parameter of operation.parameters || []) {
        const item = document.createElement("li");
        item.textContent = `query ${parameter.name}: ${parameter.description || schemaText(spec, parameter.schema)}`;
        list.append(item);
      }
      const body = operation.requestBody?.content?.["multipart/form-data"];
      if (body) {
        const item = document.createElement("li");
        item.textContent = `multipart body: ${schemaText(spec, body.schema)}`;
        list.append(item);
      }
      for (const [code, response] of Object.entries(operation.responses || {})) {
        const item = document.createElement("li");
        item.textContent = `${code}: ${response.description}`;
        list.append(item);
      }
      section.append(list);
      main.append(section);
    }
  }
  document.body.dataset.state = "ready";
});
