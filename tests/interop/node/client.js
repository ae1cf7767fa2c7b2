// A Node.js client that loads protos/ alone (plus protobuf's well-known types, which
// proto-loader bundles) and calls the service: proof that client teams in other languages
// need nothing from this repository but protos/.
// Usage: node client.js HOST:PORT  -> prints one JSON line with the answers.
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
const credentials = grpc.credentials.createInsecure();
const entitlements = new v1.EntitlementService(target, credentials);
const offers = new v1.OfferService(target, credentials);
const deadline = () => new Date(Date.now() + 5000);

function call(client, method, request) {
  return new Promise((resolve) => {
    client[method](request, { deadline: deadline() }, (error, response) =>
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
  console.log(JSON.stringify({ entitlement, offers: offerList, invalid }));
  entitlements.close();
  offers.close();
})();
