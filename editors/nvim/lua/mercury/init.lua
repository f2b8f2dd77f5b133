-- Mercury for Neovim 0.12+: registers `mercury-lsp --stdio` as the LSP client "mercury" and shows
-- its inline completions as ghost text through vim.lsp.inline_completion.
local M = {}

M.defaults = {
  cmd = { 'mercury-lsp', '--stdio' },
  filetypes = {
    'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'rust',
    'c', 'cpp', 'cs', 'java', 'kotlin', 'scala', 'swift', 'ruby', 'php', 'lua', 'sh', 'bash',
    'zsh', 'r', 'julia', 'haskell', 'ocaml', 'elixir', 'erlang', 'dart', 'zig', 'sql', 'html',
    'css', 'scss', 'json', 'jsonc', 'yaml', 'toml', 'vim',
  },
  root_markers = { '.git', 'pyproject.toml', 'setup.py', 'package.json', 'Cargo.toml', 'go.mod' },
  -- Insert-mode key that accepts the suggestion; without one it types itself. false: no mapping.
  accept_key = '<Tab>',
  -- Server settings (initializationOptions and workspace/didChangeConfiguration), e.g.
  -- { budget_ms = 250, max_tokens = 48, debounce_ms = 15, min_confidence = 0.3, engine_socket = '/path/engine.sock',
  --   engine_command = 'mercury-engine serve', model = '/path/model' }.
  settings = {},
}

local enabled = true
local settings = {}

local function mercury_clients()
  return vim.lsp.get_clients({ name = 'mercury' })
end

-- The server reads `enabled` with its other settings; keep every running client in step.
local function push_settings()
  for _, client in ipairs(mercury_clients()) do
    client.settings = { mercury = settings }
    client:notify('workspace/didChangeConfiguration', { settings = client.settings })
  end
end

--- Turns completions on or off (all buffers); with no argument, flips them.
---@param on? boolean
function M.toggle(on)
  if on == nil then
    on = not enabled
  end
  enabled = on
  settings.enabled = on
  for _, client in ipairs(mercury_clients()) do
    vim.lsp.inline_completion.enable(on, { client_id = client.id })
  end
  push_settings()
  vim.notify('Mercury completions ' .. (on and 'on' or 'off'))
end

--- Accepts the shown suggestion; returns false when there is none (so a mapping can fall through).
function M.accept()
  return vim.lsp.inline_completion.get()
end

local function format_stats(stats)
  local lines = {}
  for _, key in ipairs(vim.tbl_keys(stats)) do
    table.insert(lines, ('%s: %s'):format(key, vim.inspect(stats[key], { newline = ' ', indent = '' })))
  end
  table.sort(lines)
  return table.concat(lines, '\n')
end

--- Shows the server's `mercury/stats` (engine state, latency percentiles, cache hits).
function M.stats()
  local clients = mercury_clients()
  if #clients == 0 then
    vim.notify('Mercury: the language server is not running', vim.log.levels.WARN)
    return
  end
  -- pygls cannot parse a request without params, so send an empty object (not nil, not `{}`,
  -- which would encode as an empty array).
  clients[1]:request('mercury/stats', vim.empty_dict(), function(err, result)
    if err then
      vim.notify('Mercury: mercury/stats failed: ' .. err.message, vim.log.levels.ERROR)
    else
      vim.notify('Mercury stats\n' .. format_stats(result or {}))
    end
  end)
end

--- Asks the server to restart the engine process.
function M.restart_engine()
  for _, client in ipairs(mercury_clients()) do
    client:exec_cmd({ title = 'Restart engine', command = 'mercury.restartEngine' })
  end
end

local function map_accept_key(key)
  vim.keymap.set('i', key, function()
    if not M.accept() then
      return key
    end
  end, { expr = true, desc = 'Mercury: accept the suggestion' })
end

---@param opts? table see M.defaults
function M.setup(opts)
  opts = vim.tbl_deep_extend('force', M.defaults, opts or {})
  settings = vim.deepcopy(opts.settings)
  enabled = settings.enabled ~= false

  vim.lsp.config('mercury', {
    cmd = opts.cmd,
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    init_options = settings,
    settings = { mercury = settings },
  })
  vim.lsp.enable('mercury')

  -- Inline completion is switched on only in buffers mercury attaches to, not everywhere.
  vim.api.nvim_create_autocmd('LspAttach', {
    group = vim.api.nvim_create_augroup('mercury', { clear = true }),
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == 'mercury' then
        vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
        vim.lsp.inline_completion.enable(enabled, { client_id = client.id })
      end
    end,
  })

  if opts.accept_key then
    map_accept_key(opts.accept_key)
  end
  vim.api.nvim_create_user_command('MercuryToggle', function()
    M.toggle()
  end, { desc = 'Mercury: turn completions on or off' })
  vim.api.nvim_create_user_command('MercuryStats', M.stats, { desc = 'Mercury: show stats' })
  vim.api.nvim_create_user_command('MercuryRestartEngine', M.restart_engine, {
    desc = 'Mercury: restart the engine',
  })
end

return M
