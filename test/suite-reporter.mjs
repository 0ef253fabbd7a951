// A node:test reporter for test/suite.ts: each file's time, as the sum of its top-level tests' durations (a file runs
// them one after another), written as JSON once the run is over.
export default async function* fileTimes(source) {
  const files = {};
  for await (const event of source) {
    if ((event.type === 'test:pass' || event.type === 'test:fail') && event.data.nesting === 0 && event.data.file)
      files[event.data.file] = (files[event.data.file] ?? 0) + (event.data.details?.duration_ms ?? 0);
  }
  yield JSON.stringify(files);
}
