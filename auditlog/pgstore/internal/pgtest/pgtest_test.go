package pgtest

import (
	"context"
	"testing"
)

func TestPostgresSchemaIsFreshAndDropped(t *testing.T) {
	var schema string
	t.Run("inner", func(t *testing.T) {
		pg := NewPostgres(t)
		schema = pg.Schema
		ctx := context.Background()
		if _, err := pg.Pool.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := pg.Pool.QueryRow(ctx, "SELECT table_schema FROM information_schema.tables WHERE table_name='t' AND table_schema=$1", pg.Schema).Scan(&got); err != nil || got != pg.Schema {
			t.Fatalf("table not created in the test schema: %q %v", got, err)
		}
	})
	if schema == "" {
		return // skipped: no PostgreSQL configured
	}
	pg := NewPostgres(t)
	var n int
	if err := pg.Pool.QueryRow(context.Background(), "SELECT count(*) FROM information_schema.schemata WHERE schema_name=$1", schema).Scan(&n); err != nil || n != 0 {
		t.Fatalf("schema %s survived cleanup (n=%d, err=%v)", schema, n, err)
	}
}
