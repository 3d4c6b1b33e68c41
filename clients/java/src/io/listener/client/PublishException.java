package io.listener.client;

import io.grpc.Status;

/**
 * A failed publish: the gRPC status the API server (or the connection) gave, after the retries
 * the {@link RetryPolicy} allows. {@link BufferFullException} and {@link PublisherClosedException}
 * are the publisher's own refusals.
 */
public class PublishException extends RuntimeException {
  private static final long serialVersionUID = 1L;
  private final transient Status status;

  public PublishException(Status status) {
    super(status.getCode() + ": " + status.getDescription(), status.getCause());
    this.status = status;
  }

  /** The gRPC status of the failure. */
  public Status status() {
    return status;
  }
}
