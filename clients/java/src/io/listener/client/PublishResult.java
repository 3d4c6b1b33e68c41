package io.listener.client;

/** Where the store put one event: its server-assigned id and its sequence. */
public record PublishResult(String id, long sequence) {}
