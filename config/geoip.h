#pragma once
// server.geoip_database (SPEC §13): a MaxMind DB (.mmdb) file opened with libmaxminddb in
// MMDB_MODE_MMAP. The handle belongs to the config snapshot, like SSL_CTX and RE2: it is opened
// on every (re)load on the main thread, shared read-only by every worker through the snapshots
// that use it, and closed when the last of them goes. Lookups (MMDB_lookup_sockaddr +
// MMDB_get_value) only read the mapped file, so any thread may run them at once, and they
// allocate nothing.
//
// Thread: opening: main. Lookups: any.

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <maxminddb.h>

#include "common/c_deleter.h"

namespace sy::config {

// An ISO 3166-1 alpha-2 code as two upper-case letters packed into 16 bits ('N' << 8 | 'Z');
// 0 = unknown.
using CountryCode = uint16_t;
inline constexpr CountryCode countryCode(char a, char b) {
  return static_cast<CountryCode>((static_cast<unsigned char>(a) << 8) |
                                  static_cast<unsigned char>(b));
}
// "NZ"; "" for 0.
std::string_view countryText(CountryCode code, char (&buf)[2]);

// An officially assigned ISO 3166-1 alpha-2 code ("NZ", from Debian's iso-codes), or nullopt
// with `*error` saying why ("UK", "nz", "ZZ" are refused).
std::optional<CountryCode> parseCountryCode(std::string_view text, std::string* error);

// Closes the database and frees the MMDB_s that MMDB_open filled (the one place that calls
// MMDB_close).
void closeMmdb(MMDB_s* mmdb);
using MmdbPtr = std::unique_ptr<MMDB_s, CDeleter<&closeMmdb>>;

class GeoIpDatabase {
 public:
  // Opens `path` (already resolved against the config's directory). Null with `*error` set
  // (libmaxminddb's reason) when it cannot be read or is not a valid MaxMind DB.
  static std::shared_ptr<const GeoIpDatabase> open(const std::string& path, std::string* error);

  // The country ("country" -> "iso_code") of the address, or 0 when the database has none for
  // it (not found, an IPv6 address in an IPv4-only database, no iso_code, not two letters).
  // IPv4 addresses may be given as AF_INET or IPv4-mapped AF_INET6 (looked up as IPv4).
  CountryCode country(const sockaddr* address) const;
  // Same, from the 16-byte form used for routing (IPv4 mapped as ::ffff:a.b.c.d).
  CountryCode country(const std::array<uint8_t, 16>& address) const;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  MmdbPtr mmdb_;
};

}  // namespace sy::config
