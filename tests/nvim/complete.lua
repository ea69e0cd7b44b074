-- End-to-end: a real Neovim (0.7+) starts `ingle lsp`, opens a file, places the cursor,
-- asks for completion, applies the item and writes what it got to INGLE_NVIM_OUT.
-- Run headless: nvim --headless --clean -u NONE -S complete.lua
local ingle = os.getenv("INGLE_NVIM_CMD")
local source = os.getenv("INGLE_NVIM_FILE")
local out = os.getenv("INGLE_NVIM_OUT")
local timeout_ms = tonumber(os.getenv("INGLE_NVIM_TIMEOUT_MS") or "120000")

local function finish(result)
  local file = io.open(out, "w")
  file:write(vim.fn.json_encode(result))
  file:close()
  vim.cmd("qall!")
end

local ok, err = pcall(function()
  vim.cmd("edit " .. vim.fn.fnameescape(source))
  local bufnr = vim.api.nvim_get_current_buf()
  local messages = {}
  -- vim.lsp.start_client exists from 0.5 to 0.11 (vim.lsp.start came in 0.8): the oldest supported path.
  local client_id = vim.lsp.start_client({
    name = "ingle",
    cmd = { ingle, "lsp", "--embedded" },
    root_dir = vim.fn.fnamemodify(source, ":h"),
    -- answerWithinMs = null: the whole answer however busy the machine (early display is tested in-process).
    init_options = { maxLines = 4, answerWithinMs = vim.NIL },
    handlers = {
      ["window/showMessage"] = function(_, params)
        table.insert(messages, params.message)
      end,
    },
  })
  assert(client_id, "vim.lsp.start_client returned nil")
  vim.lsp.buf_attach_client(bufnr, client_id)
  local ready = vim.wait(timeout_ms, function()
    local client = vim.lsp.get_client_by_id(client_id)
    return client ~= nil and client.initialized
  end, 50)
  assert(ready, "the language server did not initialize")

  -- The cursor after "    return " on line 2, as in insert mode (normal mode cannot sit past the last
  -- character, so the position is given explicitly: 0-based line and UTF-16 column).
  vim.api.nvim_win_set_cursor(0, { 2, 10 })
  local params = vim.lsp.util.make_position_params()
  params.position = { line = 1, character = 11 }
  local responses = vim.lsp.buf_request_sync(bufnr, "textDocument/completion", params, timeout_ms)
  assert(responses, "no answer to textDocument/completion within the timeout")
  local items = {}
  for _, response in pairs(responses) do
    assert(not response.err, vim.inspect(response.err))
    local result = response.result or {}
    for _, item in ipairs(result.items or result) do
      table.insert(items, item)
    end
  end
  -- Accept the first item the way a completion plugin does: apply its text edit.
  if items[1] and items[1].textEdit then
    vim.lsp.util.apply_text_edits({ items[1].textEdit }, bufnr, "utf-16")
  end
  finish({
    items = items,
    line = vim.api.nvim_buf_get_lines(bufnr, 1, 2, false)[1],
    messages = messages,
    version = vim.version(),
  })
end)
if not ok then
  finish({ error = tostring(err) })
end
