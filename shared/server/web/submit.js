// The submit form: the items are uploaded as a JSONL file (POST /v1/files, purpose=batch), then a
// job is made of that file with the form's options (POST /v1/jobs {input_file_id, ...}). "Plan" sends the
// same to POST /v1/plan first and shows which GPU and platform to pick, how long and how much (plan.js);
// a submit after it reuses the uploaded file while the items are unchanged.

import { api, ApiError } from "./api.js";
import { $, say } from "./dom.js";
import { jobLink } from "./jobs.js";
import { showPlan } from "./plan.js";

/** shared/contracts/models.py ID_PATTERN */
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

const EXAMPLE_ESSAYS = [
  "El canvi climàtic és un dels reptes més grans del nostre temps. Cal reduir les emissions i fer servir més " +
    "energies renovables, com la solar i l'eòlica, perquè els nostres fills tinguin un planeta on viure.",
  "Les xarxes socials tenen coses bones i dolentes. Ens permeten parlar amb amics que viuen lluny, però també " +
    "ens fan perdre molt de temps i de vegades difonen notícies falses.",
  "Jo crec que llegir es important. Els llibres ens ensenyen coses noves i ens fan pensar, i a mes a mes son " +
    "divertits. Tothom hauria de llegir una mica cada dia.",
];

const EXAMPLE_TEMPLATE = "Grade this essay from 0 to 5 and give brief feedback in Catalan.\n\n{{ essay }}";

const EXAMPLE_SCHEMA = {
  type: "object",
  properties: { nota: { type: "integer", minimum: 0, maximum: 5 }, feedback: { type: "string" } },
  required: ["nota", "feedback"],
};

export class SubmitForm {
  constructor({ onSubmitted }) {
    this.form = $("#submit-form");
    this.message = $("#submit-message");
    this.button = $("#submit-job");
    this.onSubmitted = onSubmitted;
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.planButton = $("#plan-job");
    this.planRegion = $("#plan");
    this.planButton.addEventListener("click", () => this.plan());
    /** the last upload: {key, id}; reused while the items are the same */
    this.uploaded = null;
    $("#load-example").addEventListener("click", () => this.loadExample());
    $("#items-file").addEventListener("change", (e) => {
      const file = e.target.files?.[0];
      if (file) say(this.message, "info", `The file ${file.name} (${file.size} bytes) will be sent instead of the text box.`);
    });
  }

  loadExample() {
    $("#items").value = EXAMPLE_ESSAYS.map((essay, i) =>
      JSON.stringify({ custom_id: `essay-${i + 1}`, fields: { essay } })).join("\n") + "\n";
    $("#items-file").value = "";
    $("#job-id").value = "";
    $("#template").value = EXAMPLE_TEMPLATE;
    $("#system").value = "";
    $("#schema").value = JSON.stringify(EXAMPLE_SCHEMA, null, 2);
    $("#max-tokens").value = "60";
    $("#temperature").value = "0";
    $("#top-p").value = "";
    $("#seed").value = "";
    say(this.message, "info", "Grading example loaded: 3 essays. Press “Submit job” to run it.");
  }

  async submit() {
    const form = this.#read();
    if (!form) return;
    const { options, upload } = form;
    this.button.disabled = true;
    try {
      const fileId = await this.#upload(upload);
      say(this.message, "info", `Uploaded ${fileId}; creating the job…`);
      const job = await api("/v1/jobs", { method: "POST", json: { input_file_id: fileId, ...options } });
      say(this.message, "ok", job.created === false
        ? `A job with the id ${job.id} exists already: nothing new was started. Opening it.`
        : `Job ${job.id} accepted: ${job.total} items, ${job.status}.`);
      this.planRegion.hidden = true;
      this.onSubmitted?.(job);
      location.hash = jobLink(job.id);
    } catch (e) {
      if (e.name === "AbortError") return;
      say(this.message, "error", e.message, e.lines ?? []);
    } finally {
      this.button.disabled = false;
    }
  }

  /** POST /v1/plan with the form's job: nothing is stored or run. */
  async plan() {
    const form = this.#read();
    if (!form) return;
    const { options, upload } = form;
    const gpus = $("#plan-gpus").value.trim();
    this.planButton.disabled = true;
    try {
      const fileId = await this.#upload(upload);
      say(this.message, "info", "Counting the tokens and planning…");
      const query = gpus ? `?gpus=${encodeURIComponent(gpus)}` : "";
      const plan = await api(`/v1/plan${query}`, { method: "POST", json: { input_file_id: fileId, ...options } });
      showPlan(this.planRegion, plan);
      say(this.message, "ok", "Planned. Nothing has run yet: press “Submit job” to run it.");
    } catch (e) {
      if (e.name === "AbortError") return;
      say(this.message, "error", e.message, e.lines ?? []);
    } finally {
      this.planButton.disabled = false;
    }
  }

  /** The form's options and items, or null once a message says what is wrong with them. */
  #read() {
    try {
      return { options: this.#options(), upload: this.#items() };
    } catch (e) {
      say(this.message, "error", e.message);
      return null;
    }
  }

  /** The items uploaded as a file (POST /v1/files); the last upload's id while the items are the same. */
  async #upload(upload) {
    if (this.uploaded && this.uploaded.key === upload.key) return this.uploaded.id;
    say(this.message, "info", "Uploading the items…");
    const form = new FormData();
    form.append("purpose", "batch");
    form.append("file", upload.blob, upload.name);
    const file = await api("/v1/files", { method: "POST", body: form });
    if (file.status === "error") throw new ApiError(400, `The file was refused: ${file.status_details ?? "no reason given"}`);
    this.uploaded = { key: upload.key, id: file.id };
    return file.id;
  }

  /** The items to upload: the picked file, else the text box's JSONL. */
  #items() {
    const file = $("#items-file").files?.[0];
    if (file) return { blob: file, name: file.name || "items.jsonl", key: file };
    const text = $("#items").value;
    if (!text.trim()) throw new Error("Add some items: paste JSONL (one JSON object per line) or pick a .jsonl file.");
    return { blob: new Blob([text.endsWith("\n") ? text : `${text}\n`], { type: "application/jsonl" }), name: "items.jsonl",
      key: text };
  }

  /** The job's options (JobOptions in shared/contracts/models.py), checked here first. */
  #options() {
    const options = {};
    const id = $("#job-id").value.trim();
    if (id) {
      if (!ID_PATTERN.test(id)) {
        throw new Error("Job id: up to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit.");
      }
      options.id = id;
    }
    const template = $("#template").value;
    if (template.trim()) options.template = template;
    const system = $("#system").value;
    if (system.trim()) options.system = system;

    const schemaText = $("#schema").value.trim();
    if (schemaText) {
      let schema;
      try {
        schema = JSON.parse(schemaText);
      } catch (e) {
        throw new Error(`JSON schema: this is not valid JSON (${e.message}).`);
      }
      if (!schema || typeof schema !== "object" || Array.isArray(schema)) {
        throw new Error("JSON schema: it must be a JSON object, such as {\"type\": \"object\", ...}.");
      }
      options.response_format = { type: "json_schema", json_schema: { name: "result", schema } };
    }

    const sampling = {};
    const maxTokens = number("#max-tokens", "Max tokens", { integer: true, min: 1 });
    if (maxTokens !== null) sampling.max_tokens = maxTokens;
    const temperature = number("#temperature", "Temperature", { min: 0, max: 2 });
    if (temperature !== null) sampling.temperature = temperature;
    const topP = number("#top-p", "Top p", { min: 0, max: 1, aboveMin: true });
    if (topP !== null) sampling.top_p = topP;
    const seed = number("#seed", "Seed", { integer: true, min: 0 });
    if (seed !== null) sampling.seed = seed;
    if (Object.keys(sampling).length) options.sampling = sampling;
    return options;
  }
}

/** A number input's value (null when empty), or an Error naming the field and its range. */
function number(selector, label, { integer = false, min, max, aboveMin = false }) {
  const input = $(selector);
  const text = input.value.trim();
  if (!text && input.validity.badInput) throw new Error(`${label}: enter a number.`);
  if (!text) return null;
  const value = Number(text);
  const range = max === undefined ? `${aboveMin ? "over" : "at least"} ${min}` : `${aboveMin ? "over" : "from"} ${min} to ${max}`;
  const bad = !Number.isFinite(value) || (integer && !Number.isInteger(value)) ||
    (aboveMin ? value <= min : value < min) || (max !== undefined && value > max);
  if (bad) throw new Error(`${label}: ${integer ? "a whole number" : "a number"} ${range}.`);
  if (integer && !Number.isSafeInteger(value)) throw new Error(`${label}: this number is too large for the page.`);
  return value;
}
