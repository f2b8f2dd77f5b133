// Reads the `mercury.*` settings and turns them into the language server's setting names.
import * as vscode from 'vscode';

/** Settings the language server reads from initializationOptions and didChangeConfiguration
 * (mercury_lsp/settings.py; the defaults in package.json mirror its defaults). */
export interface ServerSettings {
  enabled: boolean;
  budget_ms: number;
  max_tokens: number;
  debounce_ms: number;
  min_confidence: number;
  engine_socket: string | null;
  engine_command: string | null; // split like a shell command line by the server
  model: string | null;
}

function config(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration('mercury');
}

// An empty string in the UI means "use the server's default", which the server spells null.
function optionalString(value: string | undefined): string | null {
  return value && value.trim() ? value.trim() : null;
}

export function serverSettings(): ServerSettings {
  const c = config();
  return {
    enabled: c.get<boolean>('enabled', true),
    budget_ms: c.get<number>('budgetMs', 250),
    max_tokens: c.get<number>('maxTokens', 48),
    debounce_ms: c.get<number>('debounceMs', 15),
    min_confidence: c.get<number>('minConfidence', 0.3),
    engine_socket: optionalString(c.get<string>('engineSocket')),
    engine_command: optionalString(c.get<string>('engineCommand')),
    model: optionalString(c.get<string>('model')),
  };
}

export function serverPath(): string {
  return optionalString(config().get<string>('serverPath')) ?? 'mercury-lsp';
}

export function languages(): string[] {
  // The default list lives in package.json (contributes.configuration).
  return config().get<string[]>('languages', []);
}

/** Settings that only take effect when the language server process is started again. */
export const RESTART_SETTINGS = ['mercury.serverPath', 'mercury.languages'];

export async function setEnabled(enabled: boolean): Promise<void> {
  await config().update('enabled', enabled, vscode.ConfigurationTarget.Global);
}
