package io.listener.client;

import io.grpc.Status;

/**
 * The publisher's buffer stayed full: at once with {@link ListenerPublisher.WhenFull#FAIL}, or
 * after the block timeout with {@link ListenerPublisher.WhenFull#BLOCK}. The event was not taken;
 * the caller decides whether to drop it, spill it or try again.
 */
public final class BufferFullException extends PublishException {
  private static final long serialVersionUID = 1L;

  public BufferFullException(String message) {
    super(Status.RESOURCE_EXHAUSTED.withDescription(message));
  }
}
