#pragma once
// `switchyard-ctl status`: the admin endpoint's GET /status JSON (SPEC §7) as a table.
//
// Thread: any (pure).

#include <string>
#include <string_view>
#include <variant>

#include "tools/ctl/error.h"

namespace sy::ctl {

// Accepts the documented shape ({"version", "config", "generation", "loaded_at", "routes":
// [{"name", "weights": {variant: n}, "upstreams": {variant: pool}}], "pools": [{"name",
// "servers": [{"address", "healthy"}]}]}); missing fields print as "-" and unknown ones are
// ignored, so an older or newer proxy still prints. Fails only on text that is not a JSON
// object.
std::variant<std::string, CtlError> formatStatus(std::string_view json_text);

}  // namespace sy::ctl
