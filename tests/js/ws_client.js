// mqtt.js over WebSockets, driven by tests/websockets.rs: connects to URL with protocol
// VERSION (4 or 5), subscribes to IN_TOPIC at QoS 1, and once one message has arrived publishes
// it back to OUT_TOPIC at QoS 1 and at QoS 2, then disconnects. Every step is printed on its own
// line so the test can follow along; any error or a stall past 25 s exits non-zero.
'use strict';

const mqtt = require('mqtt');

const [url, version, inTopic, outTopic] = process.argv.slice(2);
if (!url || !version || !inTopic || !outTopic) {
  console.error('usage: node ws_client.js URL VERSION IN_TOPIC OUT_TOPIC');
  process.exit(64);
}

const fail = (what, err) => {
  console.error(`${what}: ${err && err.message ? err.message : err}`);
  process.exit(2);
};
setTimeout(() => fail('timeout', 'no progress within 25 s'), 25000);

const client = mqtt.connect(url, {
  protocolVersion: Number(version),
  clientId: `mqttjs-v${version}`,
  clean: true,
  reconnectPeriod: 0,
  connectTimeout: 10000,
});

client.on('error', (err) => fail('error', err));
client.on('connect', (connack) => {
  console.log(`CONNECTED ${connack.returnCode ?? connack.reasonCode ?? 0}`);
  client.subscribe(inTopic, { qos: 1 }, (err, granted) => {
    if (err) return fail('subscribe', err);
    console.log(`SUBSCRIBED ${granted.map((g) => g.qos).join(',')}`);
  });
});

let got = false;
client.on('message', (topic, payload, packet) => {
  console.log(`MESSAGE ${topic} ${packet.qos} ${payload.toString()}`);
  if (got) return;
  got = true;
  client.publish(outTopic, `q1 ${payload}`, { qos: 1 }, (err) => {
    if (err) return fail('publish q1', err);
    console.log('PUBLISHED 1');
    client.publish(outTopic, `q2 ${payload}`, { qos: 2 }, (err2) => {
      if (err2) return fail('publish q2', err2);
      console.log('PUBLISHED 2');
      client.end(false, () => {
        console.log('CLOSED');
        process.exit(0);
      });
    });
  });
});
