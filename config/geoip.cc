#include "config/geoip.h"

#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "config/iso3166.h"

namespace sy::config {

std::string_view countryText(CountryCode code, char (&buf)[2]) {
  if (code == 0) return {};
  buf[0] = static_cast<char>(code >> 8);
  buf[1] = static_cast<char>(code & 0xff);
  return {buf, 2};
}

std::optional<CountryCode> parseCountryCode(std::string_view text, std::string* error) {
  if (text.size() == 2 && text[0] >= 'a' && text[0] <= 'z' && text[1] >= 'a' && text[1] <= 'z') {
    const std::string upper{static_cast<char>(text[0] - 'a' + 'A'),
                            static_cast<char>(text[1] - 'a' + 'A')};
    *error = "country codes are upper-case: \"" + upper + "\", not \"" + std::string(text) + "\"";
    return std::nullopt;
  }
  const bool assigned =
      text.size() == 2 &&
      std::binary_search(kIso3166Alpha2.begin(), kIso3166Alpha2.end(), text,
                         [](auto a, auto b) { return std::string_view(a) < std::string_view(b); });
  if (!assigned) {
    *error = "\"" + std::string(text) + "\" is not an assigned ISO 3166-1 alpha-2 country code" +
             (text == "UK" ? " (the United Kingdom is \"GB\")" : "");
    return std::nullopt;
  }
  return countryCode(text[0], text[1]);
}

void closeMmdb(MMDB_s* mmdb) {
  MMDB_close(mmdb);
  delete mmdb;
}

std::shared_ptr<const GeoIpDatabase> GeoIpDatabase::open(const std::string& path,
                                                         std::string* error) {
  MmdbPtr mmdb(new MMDB_s{});
  const int status = MMDB_open(path.c_str(), MMDB_MODE_MMAP, mmdb.get());
  if (status != MMDB_SUCCESS) {
    *error = "cannot open the MaxMind DB \"" + path + "\": " + MMDB_strerror(status);
    if (status == MMDB_IO_ERROR && errno != 0) *error += std::string(": ") + std::strerror(errno);
    // MMDB_open cleans up after itself on failure; only the struct is ours to free.
    delete mmdb.release();
    return nullptr;
  }
  auto db = std::make_shared<GeoIpDatabase>();
  db->path_ = path;
  db->mmdb_ = std::move(mmdb);
  return db;
}

CountryCode GeoIpDatabase::country(const sockaddr* address) const {
  int mmdb_error = MMDB_SUCCESS;
  // MMDB_lookup_sockaddr neither allocates nor writes to the database: safe on any thread.
  MMDB_lookup_result_s result = MMDB_lookup_sockaddr(mmdb_.get(), address, &mmdb_error);
  if (mmdb_error != MMDB_SUCCESS || !result.found_entry) return 0;
  MMDB_entry_data_s data{};
  if (MMDB_get_value(&result.entry, &data, "country", "iso_code", nullptr) != MMDB_SUCCESS ||
      !data.has_data || data.type != MMDB_DATA_TYPE_UTF8_STRING || data.data_size != 2) {
    return 0;
  }
  const char a = data.utf8_string[0];
  const char b = data.utf8_string[1];
  if (a < 'A' || a > 'Z' || b < 'A' || b > 'Z') return 0;
  return countryCode(a, b);
}

CountryCode GeoIpDatabase::country(const std::array<uint8_t, 16>& address) const {
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(address.data(), kMapped, sizeof kMapped) == 0) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    std::memcpy(&sin.sin_addr, address.data() + 12, 4);
    return country(reinterpret_cast<const sockaddr*>(&sin));
  }
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  std::memcpy(&sin6.sin6_addr, address.data(), 16);
  return country(reinterpret_cast<const sockaddr*>(&sin6));
}

}  // namespace sy::config
