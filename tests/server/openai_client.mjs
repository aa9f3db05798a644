// The official `openai` npm client against a running `kvq serve`:
// completions, chat, streaming, and an error the client must surface.
// usage: node openai_client.mjs BASE_URL API_KEY
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
let fails = 0;
const check = (name, cond, detail) => {
  console.log((cond ? "ok   " : "FAIL ") + name + (cond || detail === undefined ? "" : "  [" + JSON.stringify(detail).slice(0, 300) + "]"));
  if (!cond) fails++;
};

const models = await client.models.list();
const model = models.data[0].id;
check("models.list", models.data.length === 1 && typeof model === "string", models.data);

const c = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 16, temperature: 0 });
check("completions.create", c.choices[0].text.length > 0 && c.usage.completion_tokens === 16 &&
      c.choices[0].finish_reason === "length", c);

const chat = await client.chat.completions.create({
  model, max_tokens: 12, temperature: 0,
  messages: [{ role: "system", content: "You tell stories." }, { role: "user", content: "Tell me about a dog." }],
});
check("chat.completions.create", chat.choices[0].message.role === "assistant" &&
      chat.choices[0].message.content.length > 0 && ["stop", "length"].includes(chat.choices[0].finish_reason), chat);

let text = "", finish = null, chunks = 0, usage = null;
const stream = await client.chat.completions.create({
  model, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true },
  messages: [{ role: "system", content: "You tell stories." }, { role: "user", content: "Tell me about a dog." }],
});
for await (const ch of stream) {
  chunks++;
  if (ch.usage) usage = ch.usage;
  for (const x of ch.choices) {
    text += x.delta?.content ?? "";
    if (x.finish_reason) finish = x.finish_reason;
  }
}
check("chat stream = the same reply", chunks > 2 && text === chat.choices[0].message.content && finish !== null &&
      usage?.completion_tokens === chat.usage.completion_tokens, { text, finish, usage });

let ctext = "";
for await (const ch of await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 16, temperature: 0, stream: true }))
  ctext += ch.choices[0]?.text ?? "";
check("completions stream = the same text", ctext === c.choices[0].text, { ctext });

try {
  await client.completions.create({ model, prompt: "x", max_tokens: 0 });
  check("a bad request is an error", false);
} catch (e) {
  check("a bad request is an APIError 400 naming the field", e instanceof OpenAI.APIError && e.status === 400 &&
        e.param === "max_tokens", { status: e.status, param: e.param, message: e.message });
}
try {
  await client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] });
  check("an unknown model is an error", false);
} catch (e) {
  check("an unknown model is a NotFoundError", e instanceof OpenAI.NotFoundError && e.code === "model_not_found",
        { status: e.status, code: e.code });
}
try {
  await new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 }).models.list();
  check("a wrong key is an error", false);
} catch (e) {
  check("a wrong key is an AuthenticationError", e instanceof OpenAI.AuthenticationError, { status: e.status });
}
console.log("openai client: " + (fails ? fails + " FAILED" : "all passed"));
process.exit(fails ? 1 : 0);
