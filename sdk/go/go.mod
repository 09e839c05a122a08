module github.com/telemetryd/telemetryd/sdk/go

go 1.22
