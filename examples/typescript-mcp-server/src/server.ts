/**
 * An MCP server on the official TypeScript SDK, protected by mcp-oauthd.
 *
 * Every request to the MCP endpoint carries a bearer token. The server asks mcp-oauthd's
 * RFC 7662 introspection endpoint, authenticated with its own resource-server
 * credentials, whether the token is active *for this resource* (mcp-oauthd answers
 * `active: false` for a token minted for any other MCP server) and carries the required
 * scopes. Otherwise it answers 401 or 403 with the `WWW-Authenticate` challenge MCP
 * clients use for discovery (RFC 6750 §3, RFC 9728 §5.1). It also serves its protected
 * resource metadata at /.well-known/oauth-protected-resource/<path>.
 *
 * Configuration, from the environment:
 *
 *   MCP_RESOURCE              this server's canonical URI, e.g. https://files.example.com/mcp
 *   OAUTHD_ISSUER             mcp-oauthd's issuer, e.g. https://auth.example.com
 *   OAUTHD_INTROSPECTION_URL  default: $OAUTHD_ISSUER/oauth/introspect
 *   MCP_CLIENT_ID             this server's introspection_client_id in mcp-oauthd's config
 *   MCP_CLIENT_SECRET         its introspection_client_secret
 *   MCP_REQUIRED_SCOPES       scopes every request needs, space separated (default: none)
 *   HOST, PORT                where to listen (default 127.0.0.1:8000)
 *
 * Build and run: `npm ci && npm run build && npm start`.
 */

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";

import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

interface Settings {
  resource: string;
  issuer: string;
  introspectionUrl: string;
  clientId: string;
  clientSecret: string;
  requiredScopes: string[];
  host: string;
  port: number;
}

function settingsFromEnv(env: NodeJS.ProcessEnv): Settings {
  const resource = env.MCP_RESOURCE;
  if (!resource) throw new Error("MCP_RESOURCE is required");
  const issuer = (env.OAUTHD_ISSUER ?? "").replace(/\/+$/, "");
  return {
    resource,
    issuer,
    introspectionUrl: env.OAUTHD_INTROSPECTION_URL ?? `${issuer}/oauth/introspect`,
    clientId: env.MCP_CLIENT_ID ?? "",
    clientSecret: env.MCP_CLIENT_SECRET ?? "",
    requiredScopes: (env.MCP_REQUIRED_SCOPES ?? "").split(" ").filter(Boolean),
    host: env.HOST ?? "127.0.0.1",
    port: Number(env.PORT ?? "8000"),
  };
}

/** RFC 9728 §3.1: the well-known segment goes between the host and the resource's path. */
function resourceMetadataUrl(resource: string): URL {
  const url = new URL(resource);
  url.pathname = "/.well-known/oauth-protected-resource" + url.pathname.replace(/\/+$/, "");
  url.search = "";
  url.hash = "";
  return url;
}

function quote(value: string): string {
  return `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

function challenge(settings: Settings, error?: string): string {
  const parts = [`resource_metadata=${quote(resourceMetadataUrl(settings.resource).href)}`];
  if (settings.requiredScopes.length > 0) {
    parts.push(`scope=${quote(settings.requiredScopes.join(" "))}`);
  }
  if (error) parts.push(`error=${quote(error)}`);
  return `Bearer ${parts.join(", ")}`;
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers = {}): void {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

interface Introspection {
  active: boolean;
  aud?: string;
  scope?: string;
  client_id?: string;
  sub?: string;
  email?: string;
  username?: string;
  exp?: number;
}

async function introspect(settings: Settings, token: string): Promise<Introspection | null> {
  const basic = Buffer.from(
    `${encodeURIComponent(settings.clientId)}:${encodeURIComponent(settings.clientSecret)}`,
  ).toString("base64");
  try {
    const response = await fetch(settings.introspectionUrl, {
      method: "POST",
      headers: {
        Authorization: `Basic ${basic}`,
        "Content-Type": "application/x-www-form-urlencoded",
        Accept: "application/json",
      },
      body: new URLSearchParams({ token, token_type_hint: "access_token" }),
      signal: AbortSignal.timeout(5000),
    });
    if (!response.ok) return null;
    return (await response.json()) as Introspection;
  } catch {
    return null;
  }
}

/** Check the bearer; on refusal answer the challenge and return null. */
async function authenticate(
  settings: Settings,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<AuthInfo | null> {
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(req.headers.authorization ?? "");
  if (!match) {
    // RFC 6750 §3.1: no error code when the request had no credentials at all.
    sendJson(res, 401, { error: "unauthorized" }, { "WWW-Authenticate": challenge(settings) });
    return null;
  }
  const token = match[1];
  const claims = await introspect(settings, token);
  if (claims === null) {
    sendJson(res, 503, { error: "temporarily_unavailable" }, { "Retry-After": "5" });
    return null;
  }
  if (!claims.active || claims.aud !== settings.resource) {
    sendJson(
      res,
      401,
      { error: "invalid_token" },
      { "WWW-Authenticate": challenge(settings, "invalid_token") },
    );
    return null;
  }
  const scopes = (claims.scope ?? "").split(" ").filter(Boolean);
  if (!settings.requiredScopes.every((scope) => scopes.includes(scope))) {
    sendJson(
      res,
      403,
      { error: "insufficient_scope" },
      { "WWW-Authenticate": challenge(settings, "insufficient_scope") },
    );
    return null;
  }
  return {
    token,
    clientId: claims.client_id ?? "",
    scopes,
    expiresAt: claims.exp,
    resource: new URL(settings.resource),
    extra: { subject: claims.sub, email: claims.email, username: claims.username },
  };
}

function buildMcpServer(): McpServer {
  const server = new McpServer({ name: "files-example-ts", version: "0.1.0" });
  server.registerTool(
    "whoami",
    { description: "Who is calling, as mcp-oauthd vouches for it." },
    async (extra) => {
      const info = extra.authInfo;
      const identity = {
        subject: String(info?.extra?.subject ?? ""),
        email: String(info?.extra?.email ?? ""),
        client_id: info?.clientId ?? "",
        scopes: (info?.scopes ?? []).join(" "),
      };
      return {
        content: [{ type: "text", text: JSON.stringify(identity) }],
        structuredContent: identity,
      };
    },
  );
  server.registerTool(
    "echo",
    { description: "Echo the text back.", inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: "text", text: `echo: ${text}` }] }),
  );
  return server;
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 1024 * 1024) throw new Error("request body too large");
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  return text ? JSON.parse(text) : undefined;
}

export function startServer(settings: Settings) {
  const mcpPath = new URL(settings.resource).pathname;
  const metadataPath = resourceMetadataUrl(settings.resource).pathname;
  const metadata = {
    resource: settings.resource,
    authorization_servers: [settings.issuer],
    scopes_supported: settings.requiredScopes,
    bearer_methods_supported: ["header"],
  };

  const http = createServer(async (req, res) => {
    try {
      const path = new URL(req.url ?? "/", "http://localhost").pathname;
      if (req.method === "GET" && path === metadataPath) {
        sendJson(res, 200, metadata);
        return;
      }
      if (path !== mcpPath) {
        sendJson(res, 404, { error: "not_found" });
        return;
      }
      const auth = await authenticate(settings, req, res);
      if (auth === null) return;
      // Stateless Streamable HTTP: a server and transport per request.
      const server = buildMcpServer();
      const transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: undefined,
        enableJsonResponse: true,
      });
      res.on("close", () => {
        void transport.close();
        void server.close();
      });
      await server.connect(transport);
      const body = req.method === "POST" ? await readJson(req) : undefined;
      await transport.handleRequest(Object.assign(req, { auth }), res, body);
    } catch (error) {
      if (!res.headersSent) sendJson(res, 500, { error: "server_error" });
      console.error(error);
    }
  });
  http.listen(settings.port, settings.host, () => {
    const address = http.address();
    const port = typeof address === "object" && address ? address.port : settings.port;
    console.log(`listening on http://${settings.host}:${port}${mcpPath}`);
  });
  return http;
}

startServer(settingsFromEnv(process.env));
