#pragma once
// Which [segments.NAME] a request is in (SPEC §13), computed lazily: a segment's membership is
// worked out the first time something asks (an override naming it, a rollout stage listing it,
// switchyard-ctl explain) and at most once per request, and the client's country is looked up
// at most once, only when a `country` condition or the access log needs it. Nothing allocates.
//
// Conditions of a segment are ANDed, cheapest first: client_ip networks, the split key in
// keys_file, the country (looked up once per request), the header/cookie regex.
//
// Thread: worker-local (one per request; the segments and the database are shared read-only).

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "config/snapshot.h"
#include "proxy/http/client_ip.h"
#include "proxy/http/http_message.h"

namespace sy::proxy {

class SegmentMatcher {
 public:
  // `segments` and `geoip` (null: no database) come from the request's snapshot and must
  // outlive the matcher, as must `headers` and `client`.
  SegmentMatcher(const std::vector<config::Segment>& segments, const config::GeoIpDatabase* geoip,
                 const Headers& headers, const ClientIp& client);

  // The route's split key (what keys_file conditions look up); nullopt: the request has none,
  // so no keys_file condition holds. Forgets what was computed with the previous key.
  void setKey(std::optional<std::string_view> key);

  // Whether the request is in segment `index` (of the snapshot's segments).
  bool contains(uint32_t index);
  // Every segment's membership, bit i = segment i (explain; computes them all).
  uint64_t all();

  // The client's country from the database, or 0 (no database, or no country for the address).
  config::CountryCode country();
  // Takes `code` as the client's country instead of looking it up (switchyard-ctl explain
  // --country).
  void setCountry(config::CountryCode code) {
    country_ = code;
    country_known_ = true;
  }

  const std::vector<config::Segment>& segments() const { return segments_; }

 private:
  bool compute(const config::Segment& segment);

  const std::vector<config::Segment>& segments_;
  const config::GeoIpDatabase* geoip_;
  const Headers& headers_;
  const ClientIp& client_;
  std::optional<std::string_view> key_;
  uint64_t known_ = 0;   // bit i: membership of segment i computed
  uint64_t member_ = 0;  // bit i: in segment i (when known)
  config::CountryCode country_ = 0;
  bool country_known_ = false;
};

}  // namespace sy::proxy
