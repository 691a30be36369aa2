#include "proxy/routing/segments.h"

#include <algorithm>

#include "proxy/routing/client_address.h"
#include "proxy/routing/splitter.h"

namespace sy::proxy {

SegmentMatcher::SegmentMatcher(const std::vector<config::Segment>& segments,
                               const config::GeoIpDatabase* geoip, const Headers& headers,
                               const ClientIp& client)
    : segments_(segments), geoip_(geoip), headers_(headers), client_(client) {}

void SegmentMatcher::setKey(std::optional<std::string_view> key) {
  key_ = key;
  known_ = 0;
  member_ = 0;
}

bool SegmentMatcher::contains(uint32_t index) {
  if (index >= segments_.size() || index >= config::kMaxSegments) return false;
  const uint64_t bit = uint64_t{1} << index;
  if ((known_ & bit) == 0) {
    known_ |= bit;
    if (compute(segments_[index])) member_ |= bit;
  }
  return (member_ & bit) != 0;
}

uint64_t SegmentMatcher::all() {
  for (uint32_t i = 0; i < segments_.size() && i < config::kMaxSegments; ++i) contains(i);
  return member_;
}

config::CountryCode SegmentMatcher::country() {
  if (!country_known_) {
    country_known_ = true;
    country_ = geoip_ != nullptr ? geoip_->country(client_.bytes) : 0;
  }
  return country_;
}

bool SegmentMatcher::compute(const config::Segment& segment) {
  if (!segment.networks.empty() && !inNetworks(segment.networks, client_)) return false;
  if (segment.keys && !(key_ && segment.keys->contains(*key_))) return false;
  // One lookup per request at most (~20 ns), then a compare: before the header scan and regex.
  if (!segment.countries.empty()) {
    const config::CountryCode code = country();
    if (code == 0 || std::find(segment.countries.begin(), segment.countries.end(), code) ==
                         segment.countries.end()) {
      return false;
    }
  }
  if (segment.source != config::Segment::Source::None) {
    const std::optional<std::string_view> value = segment.source == config::Segment::Source::Header
                                                      ? findHeader(headers_, segment.source_name)
                                                      : findCookie(headers_, segment.source_name);
    if (!value || (segment.regex && !RE2::FullMatch(*value, *segment.regex))) return false;
  }
  return true;
}

}  // namespace sy::proxy
