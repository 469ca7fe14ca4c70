#pragma once
// What a ClientConnection writes through. A transport owns the socket, the
// framing of inbound bytes into protocol lines, and the bounded outbound
// queue with its gathered writes; the connection core owns everything the
// protocol decides (see client_connection.hpp).
//
// Implementations: TcpLineTransport (newline-delimited JSON over TCP) and
// WsTransport (ws_transport.hpp): it takes the upgraded
// beast::websocket::stream (as Beast's chat-multi hands the socket from
// http_session to websocket_session), turns each text message into one
// on_line() call of its core instead of splitting on '\n', writes each
// queued frame as one text message (queue, one write in flight, byte count,
// close frame after the last one) and defers its flushes through
// IoThread::defer_flush exactly like TcpLineTransport. The core tells a
// transport why it closes (close()), so the WebSocket close frame can carry
// a matching status code; that is all the core knows of the difference.
//
// Threading: a transport lives on its connection's executor (one io thread)
// and every call is made there.

#include <cstddef>

#include "gateway/close_reason.hpp"
#include "gateway/sequenced.hpp"

namespace rtmc::gateway {

class Transport {
 public:
  virtual ~Transport() = default;

  enum class Flush { now, after_batch };
  // Queues a frame. `now` writes at once (replies); `after_batch` writes when
  // the io thread finished its current batch, so a batch of deliveries
  // leaves in one write per connection.
  virtual void send(SharedFrame frame, Flush when) = 0;
  // Bytes queued or being written: they count against the connection's bound.
  virtual std::size_t queued_bytes() const = 0;
  // Ends the connection, once, for `reason`: drops what waits when
  // `drop_queued` (a slow consumer), writes `last` (a fatal error frame; may
  // be null), then closes the socket once written or after a short grace
  // period.
  virtual void close(CloseReason reason, SharedFrame last, bool drop_queued) = 0;
  // Counted per transport (GatewayCounters).
  virtual TransportKind kind() const = 0;
  // Called by the io thread after a batch for transports that asked for it.
  virtual void flush_deferred() = 0;
};

}  // namespace rtmc::gateway
