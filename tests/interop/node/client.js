// A Node.js client that loads protos/ alone (plus protobuf's well-known types, which
// proto-loader bundles) and calls the service: proof that client teams in other languages
// need nothing from this repository but protos/.
// Usage: node client.js HOST:PORT [TOKEN]  -> prints one JSON line with the answers.
// TOKEN, a service (read) credential, is sent as `authorization: Bearer TOKEN` metadata.
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const protosDir = path.resolve(__dirname, "..", "..", "..", "protos");
const definition = protoLoader.loadSync(
  ["entitlements/v1/entitlement_service.proto", "entitlements/v1/offer_service.proto"],
  { includeDirs: [protosDir], keepCase: true, enums: String, longs: Number, defaults: true }
);
const v1 = grpc.loadPackageDefinition(definition).entitlements.v1;
const target = process.argv[2];
const token = process.argv[3];
const credentials = grpc.credentials.createInsecure();
const entitlements = new v1.EntitlementService(target, credentials);
const offers = new v1.OfferService(target, credentials);
const deadline = () => new Date(Date.now() + 5000);

function metadata() {
  const md = new grpc.Metadata();
  if (token) md.set("authorization", `Bearer ${token}`);
  return md;
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
  console.log(JSON.stringify({ entitlement, offers: offerList, invalid, anonymous }));
  entitlements.close();
  offers.close();
})();
