package io.listener.client;

import io.grpc.Status;

/**
 * The publisher is closed: a publish after {@code close()}, or an event still unacknowledged when
 * {@code close(timeout)} stopped waiting (it may or may not have been stored).
 */
public final class PublisherClosedException extends PublishException {
  private static final long serialVersionUID = 1L;

  public PublisherClosedException(String message) {
    super(Status.CANCELLED.withDescription(message));
  }
}
