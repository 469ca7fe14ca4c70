#pragma once
// Kept only for pipeline.hpp and room_log.hpp, which other work owns: the
// types they need live in sequenced.hpp now. Delete once they include that.
// ("Session" means a login session from now on; a client's TCP connection is
// a ClientConnection, see client_connection.hpp.)
#include "gateway/sequenced.hpp"
