// Starts `ingle lsp` and registers it for every file type; VS Code shows its
// textDocument/inlineCompletion answers as ghost text.
import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions, TransportKind } from "vscode-languageclient/node";

let client: LanguageClient | undefined;

// Settings the language server reads (the rest start the process).
const SERVER_SETTINGS = [
  "model",
  "maxLines",
  "debounceMs",
  "prefixLines",
  "suffixLines",
  "belowLines",
  "answerWithinMs",
  "contextChunks",
  "repositoryTokens",
  "snippetTokens",
  "enabledLanguages",
  "disabledLanguages",
];

function serverSettings(config: vscode.WorkspaceConfiguration): Record<string, unknown> {
  const settings: Record<string, unknown> = {};
  for (const key of SERVER_SETTINGS) {
    const value = config.get(key);
    if (value !== undefined && value !== null) {
      settings[key] = value;
    }
  }
  return settings;
}

function serverOptions(config: vscode.WorkspaceConfiguration): ServerOptions {
  const command = config.get<string>("command") || "ingle";
  const args: string[] = [];
  const daemonUrl = config.get<string>("daemonUrl");
  if (daemonUrl) {
    args.push("--host", daemonUrl);
  }
  args.push("lsp");
  if (config.get<boolean>("embedded")) {
    args.push("--embedded");
  }
  // The API key goes through the environment, not the command line that `ps` shows.
  const env: NodeJS.ProcessEnv = { ...process.env };
  const apiKey = config.get<string>("apiKey");
  if (apiKey) {
    env.INGLE_API_KEY = apiKey;
  }
  return { command, args, transport: TransportKind.stdio, options: { env } };
}

async function start(context: vscode.ExtensionContext): Promise<void> {
  const config = vscode.workspace.getConfiguration("ingle");
  const clientOptions: LanguageClientOptions = {
    // Every file type, saved or not.
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    initializationOptions: serverSettings(config),
    synchronize: { configurationSection: "ingle" },
  };
  client = new LanguageClient("ingle", "ingle", serverOptions(config), clientOptions);
  await client.start();
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      // How the server is started changed: restart it. Other settings reach it as didChangeConfiguration.
      if (["command", "daemonUrl", "apiKey", "embedded"].some((key) => event.affectsConfiguration(`ingle.${key}`))) {
        await client?.stop();
        await start(context);
      }
    }),
  );
  await start(context);
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
