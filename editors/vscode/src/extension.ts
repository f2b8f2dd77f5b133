// Mercury for VS Code: starts `mercury-lsp --stdio`; vscode-languageclient (>= 10.0.1) shows the
// server's inline completions as ghost text by itself. This file adds settings sync, a status bar
// item and the user commands.
import * as vscode from 'vscode';
import {
  ExecuteCommandRequest,
  Executable,
  LanguageClient,
  LanguageClientOptions,
  DidChangeConfigurationNotification,
} from 'vscode-languageclient/node';
import { languages, RESTART_SETTINGS, serverPath, serverSettings, setEnabled } from './settings';
import { StatusItem, summarize } from './status';

const STATS_URI = vscode.Uri.parse('mercury-stats:Mercury%20stats.json');
const STATS_POLL_MS = 3000;
// Commands this extension registers itself; the client must not register them again for the server.
const OWN_COMMANDS = new Set(['mercury.toggle', 'mercury.restartEngine', 'mercury.showLog', 'mercury.showStats']);

let client: LanguageClient | undefined;
let log: vscode.LogOutputChannel;
let status: StatusItem;
let pollTimer: NodeJS.Timeout | undefined;
let lastStatsText = '{}';
const statsChanged = new vscode.EventEmitter<vscode.Uri>();

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  log = vscode.window.createOutputChannel('Mercury', { log: true });
  status = new StatusItem();
  context.subscriptions.push(
    log,
    status,
    statsChanged,
    vscode.workspace.registerTextDocumentContentProvider('mercury-stats', {
      onDidChange: statsChanged.event,
      provideTextDocumentContent: () => lastStatsText,
    }),
    vscode.commands.registerCommand('mercury.toggle', toggle),
    vscode.commands.registerCommand('mercury.restartEngine', restartEngine),
    vscode.commands.registerCommand('mercury.showLog', () => log.show()),
    vscode.commands.registerCommand('mercury.showStats', showStats),
    vscode.workspace.onDidChangeConfiguration(onConfigurationChanged),
    { dispose: () => stopPolling() },
  );
  await startClient();
}

export async function deactivate(): Promise<void> {
  stopPolling();
  await client?.stop();
  client = undefined;
}

async function startClient(): Promise<void> {
  const command = serverPath();
  const serverOptions: Executable = { command, args: ['--stdio'] };
  const clientOptions: LanguageClientOptions = {
    documentSelector: languages().flatMap((language) => [
      { scheme: 'file', language },
      { scheme: 'untitled', language },
    ]),
    initializationOptions: serverSettings(),
    outputChannel: log,
  };
  client = new LanguageClient('mercury', 'Mercury', serverOptions, clientOptions);
  keepOwnCommands(client);
  status.starting();
  try {
    await client.start();
  } catch (error) {
    const message = `could not start "${command} --stdio": ${error}`;
    log.error(message);
    status.stopped(message);
    client = undefined;
    // Not awaited: activation must not wait for the user to dismiss the message.
    void vscode.window
      .showErrorMessage(`Mercury: ${message}. Install mercury-lsp or set mercury.serverPath.`, 'Open Settings')
      .then((choice) => choice && vscode.commands.executeCommand('workbench.action.openSettings', 'mercury.serverPath'));
    return;
  }
  log.info(`started ${command} --stdio`);
  startPolling();
}

// The server lists its commands in executeCommandProvider and the client registers each one as a
// VS Code command; for ids this extension owns that would fail with "command already exists".
function keepOwnCommands(languageClient: LanguageClient): void {
  const feature = languageClient.getFeature(ExecuteCommandRequest.method);
  const register = feature.register.bind(feature);
  feature.register = (data) => {
    const commands = (data.registerOptions.commands ?? []).filter((id) => !OWN_COMMANDS.has(id));
    register({ ...data, registerOptions: { ...data.registerOptions, commands } });
  };
}

async function restartClient(): Promise<void> {
  stopPolling();
  const old = client;
  client = undefined;
  await old?.stop().catch((error) => log.warn(`stopping the language server: ${error}`));
  await startClient();
}

async function onConfigurationChanged(event: vscode.ConfigurationChangeEvent): Promise<void> {
  if (RESTART_SETTINGS.some((key) => event.affectsConfiguration(key))) {
    await restartClient();
  } else if (event.affectsConfiguration('mercury') && client?.isRunning()) {
    await client.sendNotification(DidChangeConfigurationNotification.type, {
      settings: { mercury: serverSettings() },
    });
    await refreshStatus();
  }
}

async function toggle(): Promise<void> {
  const enabled = !serverSettings().enabled;
  await setEnabled(enabled); // the configuration listener tells the server
  vscode.window.setStatusBarMessage(`Mercury completions ${enabled ? 'on' : 'off'}`, 2000);
}

async function restartEngine(): Promise<void> {
  if (!client?.isRunning()) {
    await restartClient();
    return;
  }
  try {
    await client.sendRequest(ExecuteCommandRequest.type, { command: 'mercury.restartEngine', arguments: [] });
    vscode.window.setStatusBarMessage('Mercury: engine restarting', 3000);
  } catch (error) {
    log.error(`mercury.restartEngine failed: ${error}`);
    vscode.window.showErrorMessage(`Mercury: restarting the engine failed: ${error}`);
  }
}

async function fetchStats(): Promise<unknown> {
  if (!client?.isRunning()) {
    throw new Error('the language server is not running');
  }
  // pygls cannot parse a request without params, so send an empty object.
  return client.sendRequest('mercury/stats', {});
}

async function refreshStatus(): Promise<void> {
  try {
    const stats = await fetchStats();
    lastStatsText = JSON.stringify(stats, null, 2);
    status.update(summarize(stats));
  } catch (error) {
    if (!client?.isRunning()) {
      status.stopped(String(error));
    } else {
      log.debug(`mercury/stats failed: ${error}`);
    }
  }
}

async function showStats(): Promise<void> {
  await refreshStatus();
  statsChanged.fire(STATS_URI);
  const doc = await vscode.workspace.openTextDocument(STATS_URI);
  await vscode.languages.setTextDocumentLanguage(doc, 'json');
  await vscode.window.showTextDocument(doc, { preview: true });
}

function startPolling(): void {
  stopPolling();
  void refreshStatus();
  pollTimer = setInterval(() => void refreshStatus(), STATS_POLL_MS);
}

function stopPolling(): void {
  if (pollTimer) {
    clearInterval(pollTimer);
    pollTimer = undefined;
  }
}
