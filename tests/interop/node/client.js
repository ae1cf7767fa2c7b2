// A Node.js client that loads protos/ alone (plus protobuf's well-known types, which
// proto-loader bundles) and calls the service: proof that client teams in other languages
// need nothing from this repository but protos/.
// Usage: node client.js HOST:PORT [TOKEN [ADMIN_TOKEN]]  -> prints one JSON line with the
// answers. TOKEN, a service (read) credential, is sent as `authorization: Bearer TOKEN`
// metadata. With ADMIN_TOKEN it also watches a user's entitlements (WatchEntitlements),
// grants the user a feature through the write service, and reports the two messages.
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const protosDir = path.resolve(__dirname, "..", "..", "..", "protos");
const definition = protoLoader.loadSync(
  [
    "entitlements/v1/entitlement_service.proto",
    "entitlements/v1/offer_service.proto",
    "entitlements/v1/subscription_event_service.proto",
  ],
  { includeDirs: [protosDir], keepCase: true, enums: String, longs: Number, defaults: true }
);
const v1 = grpc.loadPackageDefinition(definition).entitlements.v1;
const target = process.argv[2];
const token = process.argv[3];
const adminToken = process.argv[4];
const credentials = grpc.credentials.createInsecure();
const entitlements = new v1.EntitlementService(target, credentials);
const offers = new v1.OfferService(target, credentials);
const deadline = () => new Date(Date.now() + 5000);

function metadata(bearer = token) {
  const md = new grpc.Metadata();
  if (bearer) md.set("authorization", `Bearer ${bearer}`);
  return md;
}

// Watches a user's offline_downloads, grants it after the first message, and resolves
// with the first two messages (or the stream's error), within 20 s.
function watchThroughAGrant() {
  const events = new v1.SubscriptionEventService(target, credentials);
  return new Promise((resolve) => {
    const messages = [];
    const stream = entitlements.WatchEntitlements(
      { user_id: "node-watcher", feature_ids: ["offline_downloads"] },
      metadata(),
      { deadline: new Date(Date.now() + 20000) }
    );
    const finish = (result) => {
      stream.cancel();
      events.close();
      resolve(result);
    };
    stream.on("data", (message) => {
      messages.push(message);
      if (messages.length === 1) {
        const grant = {
          request_id: "node-watch-grant",
          user_id: "node-watcher",
          grant: { kind: "GRANT_KIND_SUPPORT", feature_id: "offline_downloads" },
        };
        call(events, "GrantEntitlement", grant, metadata(adminToken));
      } else {
        finish({ messages });
      }
    });
    stream.on("error", (error) => {
      if (messages.length < 2) finish({ messages, code: error.code, details: error.details });
    });
  });
}

function call(client, method, request, md = metadata()) {
  return new Promise((resolve) => {
    client[method](request, md, { deadline: deadline() }, (error, response) =>
      resolve(error ? { code: error.code, details: error.details } : response)
    );
  });
}

(async () => {
  const entitlement = await call(entitlements, "GetEntitlement", {
    user_id: "demo-active",
    feature_id: "offline_downloads",
  });
  const offerList = await call(offers, "GetOffers", {
    user_id: "demo-free",
    market: "SE",
    platform: "PLATFORM_WEB",
  });
  const invalid = await call(entitlements, "GetEntitlement", { user_id: "", feature_id: "x" });
  // Without the token: refused before any handler runs.
  const anonymous = await call(
    entitlements,
    "GetEntitlement",
    { user_id: "demo-active", feature_id: "offline_downloads" },
    new grpc.Metadata()
  );
  const watch = adminToken ? await watchThroughAGrant() : null;
  console.log(JSON.stringify({ entitlement, offers: offerList, invalid, anonymous, watch }));
  entitlements.close();
  offers.close();
})();
