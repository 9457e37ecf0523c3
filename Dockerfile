# One image holds every command; compose picks the entrypoint per service.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/ ./cmd/...

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
COPY policies /etc/guardwatch/policies
COPY deploy/tiers.yaml /etc/guardwatch/tiers.yaml
USER nonroot
