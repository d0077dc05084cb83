// Validates every generated connector definition as OpenAPI 2.0 (Swagger) with
// @apidevtools/swagger-parser: the Swagger 2.0 JSON schema, then its semantic checks (unique
// operationIds, path parameters declared, at most one body parameter, resolvable $refs).
// It also checks what the Power Platform import needs beyond the schema: `swagger: "2.0"`, a
// host, and an `apiProperties.json` beside each definition with an OAuth setting.
//
// Usage: node validate.mjs [connectors directory]   (default: ../../connectors)
import { readdir, readFile } from "node:fs/promises";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import SwaggerParser from "@apidevtools/swagger-parser";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(process.argv[2] ?? join(here, "..", "..", "connectors"));

async function definitions(dir) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await definitions(path)));
    else if (entry.name === "apiDefinition.swagger.json") out.push(path);
  }
  return out;
}

const files = (await definitions(root)).sort();
if (files.length === 0) {
  console.error(`no apiDefinition.swagger.json under ${root}`);
  process.exit(1);
}
let failed = 0;
for (const file of files) {
  try {
    const raw = JSON.parse(await readFile(file, "utf8"));
    if (raw.swagger !== "2.0") throw new Error(`swagger is ${raw.swagger}, not "2.0"`);
    const api = await SwaggerParser.validate(file);
    if (!api.host) throw new Error("no host");
    const props = JSON.parse(await readFile(join(dirname(file), "apiProperties.json"), "utf8"));
    const token = props?.properties?.connectionParameters?.token;
    if (token?.type !== "oauthSetting" || !token?.oAuthSettings?.identityProvider) {
      throw new Error("apiProperties.json has no OAuth connection parameter");
    }
    const ops = Object.values(api.paths).flatMap((p) => Object.values(p));
    console.log(`ok ${file}: ${ops.length} operations (${token.oAuthSettings.identityProvider})`);
  } catch (e) {
    failed += 1;
    console.error(`INVALID ${file}: ${e.message}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
