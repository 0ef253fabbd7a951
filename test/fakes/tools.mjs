// Entry point of every fake tool: `node tools.mjs TOOL ARGS...` (the wrappers in the world's bin/ and
// the fake checkout exec this). Loads only the module the tool needs.
const [tool, ...argv] = process.argv.slice(2);
const modules = {
  'tuya-cloudcutter.sh': './cloudcutter.mjs',
  nmcli: './nmcli.mjs',
  docker: './docker.mjs',
  esphome: './esphome.mjs',
  ss: './ss.mjs',
};
if (!modules[tool]) {
  process.stderr.write(`fake tools: unknown tool ${tool}\n`);
  process.exit(99);
}
const { main } = await import(modules[tool]);
await main(argv);
