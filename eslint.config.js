// eslint's flat config for the demo pages' JavaScript (`npm run lint`, in .ci/run).
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    // the static Space's page: ES modules in the browser, onnxruntime-web's global `ort`
    files: ["model/demo/static/**/*.js"],
    languageOptions: { ecmaVersion: 2025, sourceType: "module", globals: { ...globals.browser, ort: "readonly" } },
  },
  {
    // the Gradio page's snippets: bodies of gr.HTML js_on_load, given element, props, trigger and watch
    files: ["model/demo/web/**/*.js"],
    languageOptions: {
      ecmaVersion: 2025, sourceType: "script",
      globals: { ...globals.browser, element: "readonly", props: "readonly", trigger: "readonly", watch: "readonly" },
    },
    rules: { "no-unused-vars": ["error", { varsIgnorePattern: "^_" }] },
  },
  {
    files: ["tests/js/**/*.js", "eslint.config.js"],
    languageOptions: { ecmaVersion: 2025, sourceType: "module", globals: globals.node },
  },
];
