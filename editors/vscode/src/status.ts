// The status bar item: engine state and the latency of the last completion, from `mercury/stats`.
import * as vscode from 'vscode';

/** The parts of the server's `mercury/stats` answer that the status bar shows. */
export interface StatsSummary {
  enabled: boolean;
  engine: string; // ready, connecting, starting, loading, failed, disconnected, off
  engineError: string;
  lastLatencyMs: number | null;
}

function asNumber(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

// `stats` is the server's answer (mercury_lsp/server.py summary()); read defensively all the same.
export function summarize(stats: any): StatsSummary {
  const engine = stats?.engine;
  return {
    enabled: stats?.enabled !== false,
    engine: String(engine?.state ?? 'unknown'),
    engineError: typeof engine?.last_error === 'string' ? engine.last_error : '',
    lastLatencyMs: asNumber(stats?.latency_ms?.last),
  };
}

const ENGINE_ICONS: Record<string, string> = {
  ready: '$(sparkle)',
  connecting: '$(sync~spin)',
  starting: '$(sync~spin)',
  loading: '$(sync~spin)',
};

export class StatusItem implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;

  constructor() {
    this.item = vscode.window.createStatusBarItem('mercury.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'Mercury';
    this.item.command = 'mercury.showStats';
    this.starting();
    this.item.show();
  }

  starting(): void {
    this.set('$(loading~spin) Mercury', 'Mercury: starting the language server');
  }

  stopped(reason: string): void {
    this.set('$(error) Mercury', `Mercury: language server not running (${reason})`);
  }

  update(summary: StatsSummary): void {
    if (!summary.enabled) {
      this.set('$(circle-slash) Mercury', 'Mercury: completions are off (Mercury: Toggle)');
      return;
    }
    const latency = summary.lastLatencyMs === null ? '' : ` ${Math.round(summary.lastLatencyMs)} ms`;
    const icon = ENGINE_ICONS[summary.engine] ?? '$(warning)';
    const error = summary.engine !== 'ready' && summary.engineError ? ` (${summary.engineError})` : '';
    this.set(`${icon} Mercury${latency}`, `Mercury: engine ${summary.engine}${error}; click for stats`);
  }

  private set(text: string, tooltip: string): void {
    this.item.text = text;
    this.item.tooltip = tooltip;
  }

  dispose(): void {
    this.item.dispose();
  }
}
