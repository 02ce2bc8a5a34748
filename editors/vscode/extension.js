// Starts `cnnspec lsp` (the command is the `cnnspec.server.command` setting) for .cnn files.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace
    .getConfiguration("cnnspec")
    .get("server.command", ["cnnspec", "lsp"]);
  client = new LanguageClient(
    "cnnspec",
    "cnnspec",
    { command, args },
    { documentSelector: [{ language: "cnnspec" }] }
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
