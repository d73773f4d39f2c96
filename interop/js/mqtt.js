#!/usr/bin/env node
// The JavaScript CloudEvents SDK's MQTT binding (npm `cloudevents`) over
// mqtt.js, both ways, for the interop suite:
//
//   node mqtt.js receive --url URL --topic T --out FILE [--protocol 5|4]
//       subscribes at QoS 1, prints "subscribed" once the broker says so,
//       then writes one JSON line per message: {"event": <the SDK's event
//       in the JSON format>, "meta": {...wire details...}} or
//       {"error": "...", "meta": {...}}
//   node mqtt.js send --url URL --topic T --mode binary|structured --in FILE|-
//       publishes each event of a JSON array (JSON format) at QoS 1 through
//       the SDK's binary or structured serializer, and exits 0 once every
//       PUBACK came back without an error code (0x10, "no matching
//       subscribers", is not one: the broker dropped the message, so
//       subscribe before sending)
//
// Modules come from .cache/interop-js (NODE_PATH), installed by
// interop/run.sh from package.json and package-lock.json.

"use strict";

const fs = require("fs");
const mqtt = require("mqtt");
const { CloudEvent, MQTT, MQTTMessageFactory } = require("cloudevents");

function args(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
      throw new Error(`bad argument ${argv[i]}`);
    }
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

function connect(url, protocolVersion) {
  return mqtt.connect(url, {
    protocolVersion,
    clientId: `interop-js-${process.pid}-${Date.now()}`,
    clean: true,
    reconnectPeriod: 500,
  });
}

function isJson(contentType) {
  const base = (contentType || "application/json").split(";")[0].trim().toLowerCase();
  return base === "application/json" || base === "text/json" || base.endsWith("+json");
}

// The payload as the SDK's binary deserializer expects the data: JSON
// parsed, text as a string, anything else as bytes.
function dataOf(payload, contentType) {
  if (payload.length === 0) return undefined;
  if (isJson(contentType)) {
    try {
      return JSON.parse(payload.toString("utf8"));
    } catch {
      return payload;
    }
  }
  if ((contentType || "").toLowerCase().startsWith("text/")) return payload.toString("utf8");
  return payload;
}

function receive(opts) {
  const protocol = Number(opts.protocol || 5);
  const out = fs.openSync(opts.out, "a");
  const client = connect(opts.url, protocol);
  client.on("connect", () => {
    client.subscribe(opts.topic, { qos: 1 }, (err) => {
      if (err) {
        console.error(`subscribe failed: ${err.message}`);
        process.exit(1);
      }
      console.log("subscribed");
    });
  });
  client.on("error", (err) => console.error(`mqtt error: ${err.message}`));
  client.on("message", (topic, payload, packet) => {
    const props = packet.properties || {};
    const contentType = props.contentType;
    const userProperties = props.userProperties || {};
    const meta = {
      protocol,
      topic,
      qos: packet.qos,
      retain: packet.retain,
      content_type: contentType === undefined ? null : contentType,
      user_properties: userProperties,
      payload_b64: payload.toString("base64"),
    };
    let line;
    try {
      // Structured mode as the binding tells it apart; with neither a
      // Content Type nor user properties (MQTT 3.1.1), JSON is implied.
      const structured = /^application\/cloudevents/i.test(contentType || "") ||
        (contentType === undefined && Object.keys(userProperties).length === 0);
      const message = structured
        ? MQTTMessageFactory(contentType || "application/cloudevents+json", {}, payload.toString("utf8"))
        : MQTTMessageFactory(contentType, userProperties, dataOf(payload, contentType));
      const event = MQTT.toEvent(message, true);
      line = { event: event.toJSON(), meta };
    } catch (err) {
      line = { error: String(err && err.message ? err.message : err), meta };
    }
    fs.writeSync(out, JSON.stringify(line) + "\n");
  });
  process.on("SIGTERM", () => client.end(false, () => process.exit(0)));
}

async function send(opts) {
  const input = fs.readFileSync(opts.in === "-" ? 0 : opts.in, "utf8");
  const events = JSON.parse(input);
  const serialize = opts.mode === "structured" ? MQTT.structured : MQTT.binary;
  const client = connect(opts.url, 5);
  await new Promise((resolve, reject) => {
    client.once("connect", resolve);
    client.once("error", reject);
  });
  for (const json of events) {
    const message = serialize(new CloudEvent(json, false));
    const userProperties = {};
    for (const [name, value] of Object.entries(message["User Properties"])) {
      if (value !== undefined && value !== null) userProperties[name] = String(value);
    }
    const contentType = message.PUBLISH["Content Type"];
    let payload = message.payload;
    if (payload === undefined || payload === null) payload = Buffer.alloc(0);
    else if (typeof payload === "object" && !Buffer.isBuffer(payload) && !(payload instanceof Uint8Array)) {
      payload = JSON.stringify(payload);
    }
    // mqtt.js 5.16 never sends a publish with an empty userProperties
    // object (the promise hangs), so structured mode gets none at all.
    const properties = {};
    if (Object.keys(userProperties).length > 0) properties.userProperties = userProperties;
    if (contentType) properties.contentType = contentType;
    // Rejects on a PUBACK reason code of 0x80 or more.
    await client.publishAsync(opts.topic, payload, { qos: 1, properties });
  }
  await client.endAsync();
}

const [command, ...rest] = process.argv.slice(2);
const opts = args(rest);
if (command === "receive") {
  receive(opts);
} else if (command === "send") {
  send(opts).catch((err) => {
    console.error(`send failed: ${err.message}`);
    process.exit(1);
  });
} else {
  console.error("usage: mqtt.js receive|send --url URL --topic T ...");
  process.exit(2);
}
