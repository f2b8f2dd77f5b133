-- :checkhealth mercury
local M = {}

function M.check()
  vim.health.start('mercury')
  if vim.lsp.inline_completion then
    vim.health.ok('vim.lsp.inline_completion is available')
  else
    vim.health.error('Neovim 0.12 or newer is needed (vim.lsp.inline_completion is missing)')
  end
  local config = vim.lsp.config.mercury
  local cmd = config and config.cmd and config.cmd[1] or 'mercury-lsp'
  if vim.fn.executable(cmd) == 1 then
    vim.health.ok(cmd .. ' found: ' .. vim.fn.exepath(cmd))
  else
    vim.health.error(cmd .. ' is not on PATH', { 'pip install mercury-lsp', 'or pass cmd = { "/path/to/mercury-lsp", "--stdio" } to setup{}' })
  end
  local clients = vim.lsp.get_clients({ name = 'mercury' })
  if #clients > 0 then
    vim.health.ok(('%d mercury client(s) running'):format(#clients))
  else
    vim.health.info('no mercury client running (open a file of a supported filetype)')
  end
end

return M
